//! What a parsed request is answered with. Nothing here touches a socket:
//! the connection frames and sends whatever this returns (and leaves the
//! body out for HEAD, keeping GET's headers).

use baton_shared::config::Site;

use crate::http::request::{Method, Request};
use crate::http::response::{Response, Status};
use crate::static_files;

/// Answers `req` from `site` (`None` if the listener has no site, which a
/// valid config never allows).
pub fn respond(req: &Request, site: Option<&Site>) -> Response {
    if req.method == Method::Other {
        return Response::status(Status::MethodNotAllowed).with_header("Allow", "GET, HEAD".into());
    }
    let Some(site) = site else {
        return Response::status(Status::InternalServerError);
    };
    static_files::serve(req, site)
}
