//! What a parsed request is answered with. Nothing here touches a socket:
//! the connection frames and sends whatever this returns (and leaves the
//! body out for HEAD, keeping GET's headers).

use baton_shared::config::Site;

use crate::http::request::{Method, Request};
use crate::http::response::{DateCache, Response, Status};
use crate::static_files::{self, FileCache};

/// Answers `req` from `site` (`None` if the listener has no site, which a
/// valid config never allows), in a response whose Date is `date`.
pub fn respond(
    req: &Request,
    site: Option<&Site>,
    files: &mut FileCache,
    date: &DateCache,
) -> Response {
    match req.method {
        Method::Get | Method::Head => {}
        // Known, and not allowed on a static resource (OPTIONS included,
        // as nginx answers it): the client learns what is.
        Method::Other => {
            return Response::status(Status::MethodNotAllowed).with_header("Allow", "GET, HEAD");
        }
        // Not a method this server knows at all (RFC 9110 9.1).
        Method::Unknown => return Response::status(Status::NotImplemented),
    }
    let Some(site) = site else {
        return Response::status(Status::InternalServerError);
    };
    if let Some(port) = site.redirect_https {
        return redirect_https(req, site, port);
    }
    static_files::serve(req, site, files, date)
}

/// `redirect_https`: a 301 to the same host and target over HTTPS (the
/// port left out when it is 443). The host is the request's, else the
/// site's first name; with neither there is nowhere to send the client.
fn redirect_https(req: &Request, site: &Site, port: u16) -> Response {
    let Some(host) = req
        .host
        .as_deref()
        .or(site.names.first().map(String::as_str))
    else {
        return Response::status(Status::BadRequest);
    };
    let target = if req.target.starts_with('/') {
        req.target.as_str()
    } else {
        "/"
    };
    let location = if port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{port}{target}")
    };
    let mut response = Response::status(Status::MovedPermanently).with_header("Location", location);
    for (name, value) in &site.files.headers {
        response
            .headers
            .push((name.clone().into(), value.clone().into()));
    }
    response
}
