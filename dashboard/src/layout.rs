//! The frame every page shares (head, navigation, footer) and the one stylesheet.
//!
//! Pages are written with maud: a template's every `(value)` is HTML-escaped unless it is
//! wrapped in `PreEscaped`, which only this crate's own constant markup uses. Escaping by
//! default matters here more than anywhere: the access log shows claims, subjects, reasons and
//! paths that any caller, attested or not, chose.

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use sha2::{Digest as _, Sha256};

const STYLESHEET: &str = include_str!("../assets/style.css");

/// Where the stylesheet is served: named by its content's hash, so that a browser may keep it
/// for long and still gets the new one the moment a build changes it.
pub(crate) fn stylesheet_path() -> &'static str {
    static PATH: LazyLock<String> = LazyLock::new(|| {
        let digest = Sha256::digest(STYLESHEET.as_bytes());
        let short: String = digest
            .iter()
            .take(6)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!("/assets/style-{short}.css")
    });
    &PATH
}

/// The sections of the navigation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Section {
    Overview,
    Controls,
    AccessLog,
    Inventory,
}

const SECTIONS: [(Section, &str, &str); 4] = [
    (Section::Overview, "/", "Overview"),
    (Section::Controls, "/controls", "Controls"),
    (Section::AccessLog, "/events", "Access log"),
    (Section::Inventory, "/inventory", "Policy inventory"),
];

/// A whole page, ready to send.
pub(crate) struct Page(String);

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        response
    }
}

/// `body` in the frame, under `title`, with `active` marked in the navigation.
pub(crate) fn page(title: &str, active: Option<Section>, body: Markup) -> Page {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · Portcullis" }
                link rel="stylesheet" href=(stylesheet_path());
                // No favicon request (and no 404 for it in the browser's console).
                link rel="icon" href="data:,";
            }
            body {
                header.top {
                    a.brand href="/" { "Portcullis" }
                    nav aria-label="Sections" {
                        @for (section, href, name) in SECTIONS {
                            @if Some(section) == active {
                                a href=(href) aria-current="page" { (name) }
                            } @else {
                                a href=(href) { (name) }
                            }
                        }
                    }
                }
                main { (body) }
                footer { "Times are UTC. Every page works without JavaScript." }
            }
        }
    };
    Page(markup.into_string())
}

/// `GET` of the stylesheet.
pub(crate) async fn stylesheet() -> Response {
    let mut response = STYLESHEET.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    response
}
