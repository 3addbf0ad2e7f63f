//! The validated configuration, as master and workers use it.
//!
//! A `Config` only exists once the file parsed and passed validation, so the
//! rest of Baton never re-checks what is here. Positions (`Pos`) are kept for
//! the entries whose failure can only be seen at runtime (binding a port,
//! opening a log), so those errors can still name `file:line:col`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where in the config text an entry was written (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Where the config came from: a file (its absolute path, resolved once at
/// start so a reload re-reads the same file whatever the cwd) or the default
/// config embedded in the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Embedded,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Embedded => f.write_str("<embedded default config>"),
        }
    }
}

/// One error in a config, always with its place: `FILE:LINE:COL: message`.
/// A `pos.line` of 0 means the whole file (it could not be read) and shows as
/// `FILE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: the error is about the file as a whole (it cannot be read)
        // or about a default that was not written anywhere.
        if self.pos.line == 0 {
            return write!(f, "{}: {}", self.file, self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.pos.line, self.pos.col, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// All the errors found in one config (validation goes on after the first, so
/// an operator fixes them in one pass).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A listen address as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    /// `unix:/path/to/socket`
    Unix(PathBuf),
    /// `stdin`: the listening socket an inetd-style superserver passes as
    /// fd 0 (inetd `wait` mode, lighttpd's `server.bind = "/dev/stdin"`).
    Stdin,
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Stdin => f.write_str("stdin"),
        }
    }
}

/// One listen entry of a site. Either a plain string
/// (`"127.0.0.1:8080"`, `"[::1]:8080"`, `"unix:/run/baton/http.sock"`) or a
/// table `{ address = "...", backlog = 511, mode = "0660" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub addr: ListenAddr,
    /// listen(2) backlog; the kernel caps it at net.core.somaxconn.
    pub backlog: i32,
    /// File mode of a unix socket (ignored for TCP). Default 0o666, as a
    /// socket is reached through its directory's permissions anyway.
    pub mode: u32,
    /// `h2c = true`: cleartext HTTP/2 with prior knowledge is served here
    /// too (a connection that starts with the HTTP/2 preface), for use
    /// behind a TLS-terminating load balancer. No h2c upgrade.
    pub h2c: bool,
    pub pos: Pos,
}

/// The user and group workers run as, resolved to ids at validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// The supplementary groups (getgrouplist(3) of user and gid),
    /// resolved by the master so that a forked worker only calls
    /// setgroups(2): no NSS lookup in a child, which would also map
    /// libnss_* and their libraries into every worker.
    pub groups: Vec<u32>,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub listen: Vec<Listen>,
    /// Host names this site answers to (lowercase, no port). Empty: any.
    pub names: Vec<String>,
    /// Absolute path of the document root (an existing directory).
    /// `None` only when the site has routes: what they do not match is a
    /// 404.
    pub root: Option<PathBuf>,
    /// Index files tried, in order, for a directory request.
    pub index: Vec<String>,
    /// How files are served: listings, dotfiles, symlinks, types, headers.
    pub files: FileOptions,
    /// The access log its requests go to (its own `access_log`, else the
    /// global one); `None`: not logged.
    pub access_log: Option<PathBuf>,
    /// `tls`: this site is served over TLS on all its addresses.
    pub tls: Option<SiteTls>,
    /// `redirect_https`: a plain-HTTP site that answers every request with a
    /// 301 to `https://HOST[:PORT]/path` (the port is left out when 443).
    pub redirect_https: Option<u16>,
    /// `[[site.route]]`s: path prefixes answered by an upstream.
    pub routes: Vec<super::upstream::Route>,
    /// `http2` (default true): HTTP/2 is offered (ALPN `h2` on TLS, h2c
    /// where the listen entry asks for it). Sites sharing an address agree.
    pub http2: bool,
    pub pos: Pos,
}

/// A site's `tls` table: where its certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteTls {
    /// `cert` + `key`, or each `[[site.tls.cert]]`: the pairs to load.
    pub certs: Vec<CertFiles>,
    /// `dir`: every cert/key pair found in this directory (matched by their
    /// public key, not by file name).
    pub dir: Option<PathBuf>,
    /// `default = true`: its certificates answer clients that send no SNI
    /// (or a name no site on the address has).
    pub default: bool,
    /// `acme = true` or `acme = { ... }`: the certificate is obtained and
    /// renewed by the certificate helper (`certs` and `dir` are empty).
    pub acme: Option<super::acme::SiteAcme>,
    pub pos: Pos,
}

/// One certificate chain and its key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM: the certificate then its chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// A DER OCSP response to staple, refreshed when the file changes.
    pub ocsp: Option<PathBuf>,
    pub pos: Pos,
}

/// Lowest TLS protocol version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    #[default]
    V12,
    V13,
}

/// Global TLS settings (one `rustls::ServerConfig` per worker, so not per site).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// `tls_min_version`: "1.2" (default) or "1.3".
    pub min_version: TlsVersion,
    /// `tls_ciphers`: rustls cipher suite names in preference order; empty
    /// means rustls's safe defaults.
    pub ciphers: Vec<String>,
    /// `tls_watch_interval`: how often the master stats certificate, key and
    /// OCSP files for changes.
    pub watch_interval: Duration,
    /// `tls_unknown_sni = "reject"`: fail the handshake of a client whose SNI
    /// (or lack of it) matches no site, instead of using the default cert.
    pub reject_unknown_sni: bool,
    /// `tls_ticket_rotation`: how often the master makes a new session
    /// ticket key (the previous one still decrypts).
    pub ticket_rotation: Duration,
}

impl Default for TlsOptions {
    fn default() -> TlsOptions {
        TlsOptions {
            min_version: TlsVersion::V12,
            ciphers: Vec::new(),
            watch_interval: Duration::from_secs(5),
            reject_unknown_sni: false,
            ticket_rotation: Duration::from_secs(6 * 3600),
        }
    }
}

/// The access log's line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// nginx's "combined", plus the request time and upstream time.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

/// `[admin]`: where the master serves the admin API, and who may use it
/// (docs/admin-api.md has the security model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// A unix socket, or a loopback TCP address (which needs a token).
    pub listen: ListenAddr,
    /// File mode of the unix socket; default 0o600.
    pub mode: u32,
    /// Owner (uid, gid) of the unix socket; default the master's user.
    /// The master also lets this uid in when it checks a peer's
    /// credentials.
    pub owner: Option<(u32, u32)>,
    /// `token_file`: where the bearer token was read from (absolute).
    pub token_file: Option<std::path::PathBuf>,
    /// The token itself, read by the master when the config loads.
    pub token: Option<AdminToken>,
    pub pos: Pos,
}

/// The admin API's bearer token: visible ASCII, at least
/// `AdminToken::MIN_LEN` bytes. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Vec<u8>);

impl AdminToken {
    /// 32 characters: 128 bits as hex (`openssl rand -hex 16`), and more
    /// than any token a person would type.
    pub const MIN_LEN: usize = 32;
    /// A token file is read whole; anything longer is not a token.
    pub const MAX_LEN: usize = 4096;

    /// The token, if `text` is one: surrounding whitespace (the file's
    /// final newline) dropped, then `MIN_LEN..=MAX_LEN` bytes of visible
    /// ASCII, which is what an HTTP header can carry unchanged.
    pub fn parse(text: &[u8]) -> Result<AdminToken, String> {
        let token = text.trim_ascii();
        if token.is_empty() {
            return Err("is empty".into());
        }
        if !token.iter().all(|b| b.is_ascii_graphic()) {
            return Err(
                "must be one line of visible ASCII (no spaces or control characters)".into(),
            );
        }
        if token.len() < Self::MIN_LEN {
            return Err(format!(
                "is too short ({} characters, at least {})",
                token.len(),
                Self::MIN_LEN
            ));
        }
        if token.len() > Self::MAX_LEN {
            return Err(format!("is too long (at most {} bytes)", Self::MAX_LEN));
        }
        Ok(AdminToken(token.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Whether a symlink under the root may be followed (nginx's
/// `disable_symlinks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Symlinks {
    /// Followed wherever they point: the root's owner decides.
    #[default]
    Follow,
    /// Followed only when the link and its target have the same owner, so a
    /// user who can write under the root cannot link to another's files.
    Owner,
    /// Never followed, at any component of the path.
    Never,
}

/// A site's static-file options. `Default` is what a `[[site]]` that sets
/// none of them gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOptions {
    /// Serve an HTML listing for a directory without an index file.
    pub directory_listing: bool,
    /// Serve names starting with `.` (`.git`, `.env`): off means 404.
    pub dotfiles: bool,
    pub symlinks: Symlinks,
    /// Extension (lowercase, no dot) → Content-Type, before the built-in
    /// table.
    pub types: Vec<(String, String)>,
    /// Content-Type when neither table knows the extension.
    pub default_type: String,
    /// Added to text types (`text/html; charset=utf-8`). `None`: never.
    pub charset: Option<String>,
    /// Serve `x.br` / `x.gz` beside `x` to clients that accept them.
    pub precompressed: bool,
    /// Headers added to every response of the site.
    pub headers: Vec<(String, String)>,
    /// URL-path prefix → headers added (after the site's) to responses for
    /// paths under it, in config order.
    pub path_headers: Vec<(String, Vec<(String, String)>)>,
    /// Status → URL path (under the root) of the page sent with it.
    pub error_pages: Vec<(u16, String)>,
    /// URL path served (with 200) when a GET or HEAD finds no file: the
    /// `try_files $uri $uri/ /index.html` of single-page apps.
    pub fallback: Option<String>,
    /// `compress`: on-the-fly compression of this site's responses;
    /// `None`: off.
    pub compress: Option<crate::config::compress::Compress>,
}

impl Default for FileOptions {
    fn default() -> FileOptions {
        FileOptions {
            directory_listing: false,
            dotfiles: false,
            symlinks: Symlinks::Follow,
            types: Vec::new(),
            default_type: "application/octet-stream".to_owned(),
            charset: Some("utf-8".to_owned()),
            precompressed: false,
            headers: Vec::new(),
            path_headers: Vec::new(),
            error_pages: Vec::new(),
            fallback: None,
            compress: None,
        }
    }
}

/// The HTTP/1.1 engine's limits, global to all sites (a request's site is
/// only known once its head is parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request head (request line and headers): 431 above.
    pub max_header_size: usize,
    /// Most header fields in a request: 431 above.
    pub max_headers: usize,
    /// Longest request target: 414 above.
    pub max_uri_length: usize,
    /// Largest request body read (and discarded): 413 above.
    pub max_body_size: u64,
    /// Open connections per worker; past it, new ones wait in the queue.
    pub max_connections: usize,
    /// Requests on one keep-alive connection before it is closed.
    pub keepalive_requests: u64,
    /// A request body that makes no progress for this long is abandoned.
    pub body_timeout: Duration,
    /// A response the client does not read for this long is abandoned.
    pub send_timeout: Duration,
    /// The `Server` header's value; `None` sends no `Server` header.
    pub server_token: Option<String>,
    /// Bytes of small files each worker keeps in memory; 0 turns the file
    /// cache off.
    pub file_cache_size: u64,
    /// Files larger than this are never cached.
    pub file_cache_max_file_size: u64,
    /// HTTP/2 connections' limits (`http2_*`).
    pub http2: super::http2::Http2Limits,
}

/// Upper bound of `max_headers` (the parser's slots live on the stack).
pub const MAX_HEADERS_LIMIT: usize = 1024;

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_header_size: 16 * 1024,
            max_headers: 100,
            max_uri_length: 8 * 1024,
            max_body_size: 1024 * 1024,
            max_connections: 4096,
            keepalive_requests: 1000,
            body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            server_token: Some("baton".to_owned()),
            file_cache_size: 8 * 1024 * 1024,
            file_cache_max_file_size: 64 * 1024,
            http2: super::http2::Http2Limits::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub source: Source,
    /// Who workers run as. `None` when the master is not root (it cannot
    /// change user, so workers run as the invoking user).
    pub identity: Option<Identity>,
    /// `run_as_root = true`: the explicit opt-in to workers running as root.
    pub run_as_root: bool,
    /// Number of workers per generation; `"auto"` resolves to the CPU count.
    pub workers: usize,
    /// Absolute path of the pidfile. Default `/run/baton.pid` for root,
    /// `$XDG_RUNTIME_DIR/baton.pid` (or `/tmp/baton-UID.pid`) otherwise.
    pub pid_file: PathBuf,
    /// How long a draining generation (or a graceful stop) may take before
    /// what is left is killed.
    pub grace: Duration,
    /// Log file (absolute path); `None` logs to stderr.
    pub error_log: Option<PathBuf>,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: String,
    /// How long a new worker may take to report `Ready`.
    pub worker_ready_timeout: Duration,
    /// Generations allowed to drain at once; past it the oldest is stopped
    /// fast (HAProxy's `mworker-max-reloads`).
    pub max_draining_generations: usize,
    /// How long a draining worker keeps an idle keep-alive connection open
    /// for one last request before closing it.
    pub drain_linger: Duration,
    /// With `listen = ["stdin"]` (inetd): the server stops gracefully once
    /// it had no connection for this long, so the superserver starts it
    /// again on the next one (lighttpd's 60 s); zero never exits.
    pub inetd_idle_exit: Duration,
    /// Idle keep-alive connections are closed after this long.
    pub keepalive_timeout: Duration,
    /// A request head must arrive within this long (slowloris).
    pub header_timeout: Duration,
    /// TCP_DEFER_ACCEPT on TCP listeners: the kernel hands a connection
    /// over only once its first bytes arrived, or after this long; zero
    /// hands it over as soon as the handshake completes.
    pub defer_accept: Duration,
    /// Limits and timeouts of the HTTP/1.1 engine.
    pub http: HttpLimits,
    pub sites: Vec<Site>,
    /// The admin API; off unless configured.
    pub admin: Option<Admin>,
    pub access_log_format: LogFormat,
    /// Mode of log files the master creates (default 0o640).
    pub log_mode: u32,
    /// Owner (uid, gid) of log files the master creates; default its own.
    pub log_owner: Option<(u32, u32)>,
    pub tls: TlsOptions,
    /// `worker_rlimit_nofile`: the RLIMIT_NOFILE the master sets before it
    /// forks workers; `None` ("auto") derives it from `max_connections`.
    pub worker_rlimit_nofile: Option<u64>,
    /// The certificates and keys the sites' `tls` name, read and verified
    /// by the master after validation (`crate::tls::load`); empty until then.
    pub tls_loaded: LoadedTls,
    /// `[[upstream]]`s (and those routes written as URLs) and
    /// `trusted_proxies`.
    pub proxy: super::upstream::ProxyConfig,
    /// The `acme_*` settings (used only when a site has `tls.acme`).
    pub acme: super::acme::AcmeOptions,
}

/// Loaded certificates inside a `Config`. Configs compare by what is
/// written, so two `LoadedTls` are always equal; `Debug` shows no key.
#[derive(Debug, Clone, Default)]
pub struct LoadedTls(pub std::sync::Arc<crate::tls::Material>);

impl PartialEq for LoadedTls {
    fn eq(&self, _: &LoadedTls) -> bool {
        true
    }
}

impl Eq for LoadedTls {}

impl Config {
    /// Every distinct listen entry of every site, first occurrence wins.
    pub fn listens(&self) -> Vec<&Listen> {
        let mut out: Vec<&Listen> = Vec::new();
        for site in &self.sites {
            for l in &site.listen {
                if !out.iter().any(|o| o.addr == l.addr) {
                    out.push(l);
                }
            }
        }
        out
    }

    /// The sites served on one listen address, in config order.
    pub fn sites_on<'a>(&'a self, addr: &'a ListenAddr) -> impl Iterator<Item = &'a Site> + 'a {
        self.sites
            .iter()
            .filter(move |s| s.listen.iter().any(|l| &l.addr == addr))
    }

    /// Every distinct access log file, in config order; a site's log is
    /// `access_logs()[i]` where `i` is `access_log_index(site)`.
    pub fn access_logs(&self) -> Vec<&PathBuf> {
        let mut out: Vec<&PathBuf> = Vec::new();
        for p in self.sites.iter().filter_map(|s| s.access_log.as_ref()) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    /// Whether connections on `addr` speak TLS (its sites agree: validated).
    pub fn tls_on(&self, addr: &ListenAddr) -> bool {
        self.sites_on(addr).any(|s| s.tls.is_some())
    }

    /// An error located at `pos` in this config's file.
    pub fn error_at(&self, pos: Pos, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.source.to_string(),
            pos,
            message: message.into(),
        }
    }
}
