//! Upstream connections' tokens: each connection is registered with the
//! poll once, for reading and writing (edge-triggered), under a token of
//! its own for its whole life, pooled or in use. Who its events go to is
//! this table's answer, changed without a syscall: the client connection
//! whose exchange uses it, or the pool (which then checks whether the
//! server closed it). nginx keeps its upstream keep-alive connections
//! registered the same way; re-registering on every take from and return
//! to the pool cost two `epoll_ctl` per proxied request.
//!
//! A slot is freed when its connection is dropped (its fd closed, which
//! takes it out of the poll): an event still queued for it is ignored, or
//! reaches the slot's next connection as a spurious readiness, which reads
//! and writes that would block absorb.

use std::cell::RefCell;
use std::rc::Rc;

use mio::Token;

/// Upstream connection tokens start here, far above the client
/// connections' (`CONNECTION_BASE + 2 * key`, keys bounded by the
/// connection limit).
pub const UPSTREAM_BASE: usize = 1 << 40;

/// Where a slot's events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Unused (its connection was dropped).
    Free,
    /// Idle in its upstream's pool.
    Pooled,
    /// In use by the exchange of the connection whose upstream token this
    /// is.
    Exchange(Token),
}

#[derive(Debug, Default)]
pub struct Table {
    owners: Vec<Owner>,
    free: Vec<usize>,
}

/// The table, shared by every upstream's state and every slot.
pub type Tokens = Rc<RefCell<Table>>;

impl Table {
    pub fn owner(&self, id: usize) -> Owner {
        self.owners.get(id).copied().unwrap_or(Owner::Free)
    }
}

/// A connection's slot; freed when dropped.
#[derive(Debug)]
pub struct Slot {
    id: usize,
    table: Tokens,
}

impl Slot {
    pub fn new(table: &Tokens) -> Slot {
        let mut t = table.borrow_mut();
        let id = match t.free.pop() {
            Some(id) => id,
            None => {
                t.owners.push(Owner::Free);
                t.owners.len() - 1
            }
        };
        t.owners[id] = Owner::Pooled;
        Slot {
            id,
            table: Rc::clone(table),
        }
    }

    pub fn id(&self) -> usize {
        self.id
    }

    /// The token the connection is registered under.
    pub fn token(&self) -> Token {
        Token(UPSTREAM_BASE + self.id)
    }

    pub fn set(&self, owner: Owner) {
        if let Some(o) = self.table.borrow_mut().owners.get_mut(self.id) {
            *o = owner;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.table.borrow_mut();
        if let Some(o) = t.owners.get_mut(self.id) {
            *o = Owner::Free;
            t.free.push(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_freed() {
        let table = Tokens::default();
        let a = Slot::new(&table);
        let b = Slot::new(&table);
        assert_ne!(a.token(), b.token());
        assert_eq!(a.token(), Token(UPSTREAM_BASE));
        a.set(Owner::Exchange(Token(7)));
        assert_eq!(table.borrow().owner(a.id()), Owner::Exchange(Token(7)));
        assert_eq!(table.borrow().owner(b.id()), Owner::Pooled);
        let id = a.id();
        drop(a);
        assert_eq!(table.borrow().owner(id), Owner::Free);
        let c = Slot::new(&table);
        assert_eq!(c.id(), id);
        assert_eq!(table.borrow().owner(99), Owner::Free);
    }
}
