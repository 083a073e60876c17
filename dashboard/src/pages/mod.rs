//! The pages, one module per section of the navigation.

pub(crate) mod controls;
pub(crate) mod events;
pub(crate) mod inventory;
pub(crate) mod overview;

use maud::{Markup, html};

/// A status as a coloured label; `class` picks the colour from the stylesheet.
pub(crate) fn badge(class: &str, text: &str) -> Markup {
    html! { span class=(format!("status {class}")) { (text) } }
}

/// A value, or a dash for none.
pub(crate) fn or_dash(value: Option<&str>) -> Markup {
    match value {
        Some(value) => html! { (value) },
        None => html! { span.muted { "—" } },
    }
}
