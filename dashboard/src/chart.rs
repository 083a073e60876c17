//! Charts drawn on the server as inline SVG: no script, nothing fetched, and the numbers
//! beside each chart in a table for screen readers and for copying. Colours come from the
//! stylesheet's classes (an inline `style` would break the Content-Security-Policy).

use maud::{Markup, html};

use crate::format;

/// One bar: a bucket of time with its decisions and, of them, denials.
#[derive(Clone, Debug)]
pub(crate) struct Bucket {
    pub(crate) label: String,
    pub(crate) decisions: u64,
    pub(crate) denials: u64,
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 28.0;

/// Decisions per bucket as bars, denials as a bar over each.
pub(crate) fn decisions(buckets: &[Bucket], what: &str) -> Markup {
    let peak = buckets
        .iter()
        .map(|b| b.decisions)
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let slot = plot_width / buckets.len().max(1) as f64;
    let bar = (slot * 0.8).max(0.5);
    let height = |count: u64| count as f64 / peak as f64 * plot_height;
    let base = TOP + plot_height;
    let ticks = label_ticks(buckets.len());
    html! {
        svg.chart viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
            aria-label=(what) xmlns="http://www.w3.org/2000/svg" {
            title { (what) }
            line.axis x1=(LEFT) y1=(base) x2=(WIDTH - RIGHT) y2=(base) {}
            line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(base) {}
            text x=(LEFT - 4.0) y=(TOP + 9.0) text-anchor="end" { (format::count(peak)) }
            text x=(LEFT - 4.0) y=(base) text-anchor="end" { "0" }
            @for (idx, bucket) in buckets.iter().enumerate() {
                @let x = LEFT + idx as f64 * slot + (slot - bar) / 2.0;
                g {
                    title {
                        (bucket.label) ": " (format::count(bucket.decisions)) " decisions, "
                        (format::count(bucket.denials)) " denied"
                    }
                    rect.total x=(num(x)) y=(num(base - height(bucket.decisions)))
                        width=(num(bar)) height=(num(height(bucket.decisions))) {}
                    rect.denied x=(num(x)) y=(num(base - height(bucket.denials)))
                        width=(num(bar)) height=(num(height(bucket.denials))) {}
                }
            }
            @for idx in ticks {
                @if let Some(bucket) = buckets.get(idx) {
                    text x=(num(LEFT + (idx as f64 + 0.5) * slot)) y=(HEIGHT - 8.0)
                        text-anchor=(anchor(idx, buckets.len())) { (bucket.label) }
                }
            }
        }
        div.legend {
            span { span.swatch.total {} "decisions" }
            span { span.swatch.denied {} "denied" }
        }
    }
}

/// Which buckets get a label under the axis: the first, the last and one between.
fn label_ticks(count: usize) -> Vec<usize> {
    match count {
        0 => Vec::new(),
        1 => vec![0],
        2 => vec![0, 1],
        _ => vec![0, count / 2, count - 1],
    }
}

fn anchor(idx: usize, count: usize) -> &'static str {
    if idx == 0 && count > 1 {
        "start"
    } else if idx + 1 == count && count > 1 {
        "end"
    } else {
        "middle"
    }
}

/// A coordinate with two decimals: enough for a 960-wide picture, and short.
fn num(value: f64) -> String {
    format!("{value:.2}")
}

/// One square per report, oldest on the left, coloured by the control's status there.
pub(crate) fn status_strip(statuses: &[(String, &'static str)], what: &str) -> Markup {
    let size = 14.0;
    let gap = 3.0;
    let width = (statuses.len().max(1) as f64) * (size + gap);
    html! {
        svg.strip viewBox=(format!("0 0 {} {}", num(width), size)) width=(num(width))
            height=(size) role="img" aria-label=(what) xmlns="http://www.w3.org/2000/svg" {
            title { (what) }
            @for (idx, (label, status)) in statuses.iter().enumerate() {
                rect class=(status) x=(num(idx as f64 * (size + gap))) y="0" width=(size)
                    height=(size) rx="2" {
                    title { (label) ": " (status) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_scaled_to_the_peak_and_labels_escaped() {
        let buckets = vec![
            Bucket {
                label: "<b>".to_owned(),
                decisions: 10,
                denials: 5,
            },
            Bucket {
                label: "later".to_owned(),
                decisions: 5,
                denials: 0,
            },
        ];
        let svg = decisions(&buckets, "decisions").into_string();
        assert!(svg.contains("&lt;b&gt;"), "{svg}");
        assert!(!svg.contains("<b>"), "{svg}");
        // The peak bar fills the plot's height; the half bar half of it.
        assert!(svg.contains("height=\"202.00\""), "{svg}");
        assert!(svg.contains("height=\"101.00\""), "{svg}");
    }

    #[test]
    fn an_empty_chart_still_draws_its_axes() {
        let svg = decisions(&[], "nothing").into_string();
        assert!(svg.contains("<line"));
        assert!(!svg.contains("<rect"));
    }
}
