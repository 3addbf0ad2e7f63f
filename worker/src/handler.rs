//! What a parsed request is answered with. Nothing here touches a socket:
//! the connection frames and sends whatever this returns.

use baton_shared::config::Site;

use crate::files::{self, Found};
use crate::http::request::{Method, Request};
use crate::http::response::{Response, Status};
use crate::outgoing::{Body, FileBody};

/// Answers `req` from `site` (`None` if the listener has no site, which a
/// valid config never allows).
pub fn respond(req: &Request, site: Option<&Site>) -> Response {
    if req.method == Method::Other {
        return Response::status(Status::MethodNotAllowed).with_header("Allow", "GET, HEAD".into());
    }
    let (path, query) = match req.target.find('?') {
        Some(i) => req.target.split_at(i),
        None => (req.target.as_str(), ""),
    };
    // A fragment is never sent by a client; if it is, it is not the path.
    let path = path.split('#').next().unwrap_or_default();
    let Some(site) = site else {
        return Response::status(Status::InternalServerError);
    };
    match files::lookup(&site.root, &site.index, path, query) {
        Found::File(f) => {
            let mut headers = vec![("Content-Type", f.content_type.to_owned())];
            if let Some(m) = f.modified {
                headers.push(("Last-Modified", httpdate::fmt_http_date(m)));
            }
            Response {
                status: Status::Ok,
                headers,
                body: Body::File(FileBody {
                    file: f.file,
                    offset: 0,
                    remaining: f.len,
                }),
            }
        }
        Found::Redirect(location) => {
            Response::status(Status::MovedPermanently).with_header("Location", location)
        }
        Found::Error(status) => Response::status(status),
    }
}
