//! The listener set's rules, on real sockets.

use super::*;
use baton_shared::config::Pos;

fn tcp(a: &str) -> ListenAddr {
    ListenAddr::Tcp(a.parse().unwrap())
}

fn get_int(socket: &Socket, level: libc::c_int, option: libc::c_int) -> libc::c_int {
    let mut value: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a live c_int with its exact size.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "{}", io::Error::last_os_error());
    value
}

#[test]
fn what_covers_a_retired_address() {
    assert!(covers(&tcp("0.0.0.0:80"), &tcp("127.0.0.1:80")));
    assert!(covers(&tcp("[::]:80"), &tcp("[::1]:80")));
    assert!(!covers(&tcp("0.0.0.0:81"), &tcp("127.0.0.1:80")));
    assert!(!covers(&tcp("[::]:80"), &tcp("127.0.0.1:80")), "v6-only");
    assert!(!covers(&tcp("127.0.0.1:80"), &tcp("0.0.0.0:80")));
    assert!(!covers(&tcp("127.0.0.2:80"), &tcp("127.0.0.1:80")));
    let unix = ListenAddr::Unix("/run/a.sock".into());
    assert!(!covers(&unix, &unix));
}

/// Retiring steers new connections away and turns TCP_DEFER_ACCEPT off;
/// the linger ends once; a failed reload that would have brought the
/// socket back leaves it retired, linger and all.
#[test]
fn a_retired_socket_lingers_once_and_a_failed_revival_changes_nothing() {
    let mut set = ListenerSet::default();
    let addr = tcp("127.0.0.1:0");
    let listen = Listen {
        addr: addr.clone(),
        backlog: 16,
        mode: 0o666,
        h2c: false,
        pos: Pos::default(),
    };
    let bound = set.bind(&listen).unwrap();
    set_int(&bound.socket, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 5).unwrap();
    set.bound.insert(addr.clone(), bound);

    set.retire_all_but(&[], Duration::from_secs(2));
    let b = set.get(&addr).unwrap();
    assert!(b.retired && set.lingering(&addr));
    assert_eq!(
        get_int(&b.socket, libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX),
        NO_SUCH_INTERFACE
    );
    assert_eq!(
        get_int(&b.socket, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT),
        0
    );
    let end = set.next_linger_end().unwrap();
    assert!(set.lingered(Instant::now()).is_empty());

    // A reload that would bring it back fails: its plan is undone
    // before any commit, and the socket is as it was.
    let plan = Prepared {
        added: Vec::new(),
        kept: vec![listen.clone()],
    };
    set.undo(&plan);
    assert!(set.lingering(&addr));
    assert_eq!(set.next_linger_end(), Some(end));
    assert_eq!(
        get_int(
            &set.get(&addr).unwrap().socket,
            libc::SOL_SOCKET,
            libc::SO_BINDTOIFINDEX
        ),
        NO_SUCH_INTERFACE
    );

    assert_eq!(set.lingered(end), vec![addr.clone()]);
    assert!(!set.lingering(&addr));
    assert!(set.lingered(end + Duration::from_secs(1)).is_empty());
    set.close_unused(&[]);
    assert!(set.get(&addr).is_none());
}

mod plan {
    use baton_shared::config::Pos;

    use super::*;

    fn listen(addr: &str, backlog: i32) -> Listen {
        Listen {
            addr: ListenAddr::Tcp(addr.parse().unwrap()),
            backlog,
            mode: 0o666,
            h2c: false,
            pos: Pos::default(),
        }
    }

    /// A commit brings a retired address back; one that never comes does
    /// not.
    #[test]
    fn a_revival_waits_for_the_commit() {
        let mut set = ListenerSet::default();
        let l = listen("127.0.0.1:0", 16);
        let bound = set.bind(&l).unwrap();
        set.bound.insert(l.addr.clone(), bound);
        set.retire_all_but(&[], Duration::from_secs(5));
        let plan = Prepared {
            added: Vec::new(),
            kept: vec![l.clone()],
        };
        assert!(set.get(&l.addr).unwrap().retired, "not before the commit");
        assert_eq!(
            set.commit(&plan, Duration::from_secs(1)),
            vec![l.addr.clone()]
        );
        assert!(!set.get(&l.addr).unwrap().retired);
        assert!(!set.lingering(&l.addr));
    }
}
