//! Cloud events: what the browser script sends for a visitor who chose Accept All.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::limits::{MAX_COMPARISON_SOURCES, MAX_NAME_LEN, MAX_ROUTE_LEN, TOKEN_PATTERN};
use crate::text::check_token;
use crate::{EventId, Violation, VisitorId, WireEvent};

/// One thing a consenting visitor did on PipeRider Cloud.
///
/// `sources` is present exactly on `comparison_sources` events and `metric`
/// exactly on `trend_metric_selected` events. Pages are named by their route
/// template (`/reports/:id`), never by a raw URL, id or query string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("allOf" = [
    {
        "if": {"properties": {"event_type": {"const": "comparison_sources"}}},
        "then": {"required": ["sources"], "properties": {"sources": {"type": "array"}}},
        "else": {"properties": {"sources": {"type": "null"}}}
    },
    {
        "if": {"properties": {"event_type": {"const": "trend_metric_selected"}}},
        "then": {"required": ["metric"], "properties": {"metric": {"type": "string"}}},
        "else": {"properties": {"metric": {"type": "null"}}}
    }
]))]
pub struct CloudEvent {
    /// Version of the wire format; 1 when absent.
    #[serde(default = "crate::schema_version_default")]
    #[schemars(range(min = 1, max = 1))]
    pub schema_version: u8,
    /// Made by the browser; the backend stores each event id once.
    #[schemars(extend("not" = {"const": "00000000-0000-0000-0000-000000000000"}))]
    pub event_id: EventId,
    /// What happened.
    pub event_type: CloudEventType,
    /// When it happened, RFC 3339 in UTC.
    pub timestamp: DateTime<Utc>,
    /// The browser's random id, made once consent is given and forgotten with it.
    pub visitor_id: VisitorId,
    /// The route template of the page it happened on.
    pub route: RouteTemplate,
    /// `comparison_sources` only: where the compared reports came from (`upload`, `cli`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = MAX_COMPARISON_SOURCES),
        inner(length(min = 1, max = MAX_NAME_LEN), regex(pattern = TOKEN_PATTERN))
    )]
    pub sources: Option<Vec<String>>,
    /// `trend_metric_selected` only: the metric chosen on the historical trend graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAME_LEN), regex(pattern = TOKEN_PATTERN))]
    pub metric: Option<String>,
}

/// Every kind of Cloud event: a page view, the sources of a report
/// comparison, the metric picked on the trend graph, and eight actions.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[schemars(transform = crate::schema::names_enum)]
pub enum CloudEventType {
    /// A page was shown (its route template, never its URL).
    PageView,
    /// Where the reports of a comparison came from, in `sources`.
    ComparisonSources,
    /// A metric was picked on the historical trend graph; `metric` names it.
    TrendMetricSelected,
    /// The visitor logged in.
    Login,
    /// The visitor logged out.
    Logout,
    /// The visitor saved their profile.
    UpdateProfile,
    /// A report was uploaded.
    UploadReport,
    /// A report was shared.
    ShareReport,
    /// The feedback form was opened.
    OpenFeedbackForm,
    /// The feedback form was sent (its text is never part of the event).
    SubmitFeedback,
    /// Reports were compared (the action; `comparison_sources` carries where they came from).
    CompareReports,
}

impl CloudEventType {
    /// Every type, in the order the dashboard lists them.
    pub const ALL: [CloudEventType; 11] = [
        CloudEventType::PageView,
        CloudEventType::ComparisonSources,
        CloudEventType::TrendMetricSelected,
        CloudEventType::Login,
        CloudEventType::Logout,
        CloudEventType::UpdateProfile,
        CloudEventType::UploadReport,
        CloudEventType::ShareReport,
        CloudEventType::OpenFeedbackForm,
        CloudEventType::SubmitFeedback,
        CloudEventType::CompareReports,
    ];

    /// The name on the wire and in the backend's tables.
    pub fn as_str(self) -> &'static str {
        match self {
            CloudEventType::PageView => "page_view",
            CloudEventType::ComparisonSources => "comparison_sources",
            CloudEventType::TrendMetricSelected => "trend_metric_selected",
            CloudEventType::Login => "login",
            CloudEventType::Logout => "logout",
            CloudEventType::UpdateProfile => "update_profile",
            CloudEventType::UploadReport => "upload_report",
            CloudEventType::ShareReport => "share_report",
            CloudEventType::OpenFeedbackForm => "open_feedback_form",
            CloudEventType::SubmitFeedback => "submit_feedback",
            CloudEventType::CompareReports => "compare_reports",
        }
    }

    /// True for the eight user actions (log in, log out, ...), false for
    /// page views, comparison sources and trend metrics.
    pub fn is_action(self) -> bool {
        !matches!(
            self,
            CloudEventType::PageView
                | CloudEventType::ComparisonSources
                | CloudEventType::TrendMetricSelected
        )
    }
}

impl fmt::Display for CloudEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A page's route template: `/`, `/reports/:id`, `/projects/:project/compare`.
///
/// Segments are literal lowercase names or `:placeholders`. A segment that
/// looks like a raw id (all digits, or 8 or more hex digits with at least one
/// digit) is refused, so a URL with an id in it cannot slip through as a route.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RouteTemplate(String);

impl RouteTemplate {
    /// The template as sent (`/reports/:id`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RouteTemplate {
    type Error = Violation;
    fn try_from(s: String) -> Result<Self, Violation> {
        check_route(&s).map_err(|reason| Violation::new(".", reason))?;
        Ok(RouteTemplate(s))
    }
}

fn check_route(s: &str) -> Result<(), Cow<'static, str>> {
    if s.is_empty() || s.len() > MAX_ROUTE_LEN {
        return Err(format!("must be 1 to {MAX_ROUTE_LEN} characters").into());
    }
    let Some(rest) = s.strip_prefix('/') else {
        return Err("must start with '/'".into());
    };
    if rest.is_empty() {
        return Ok(());
    }
    for segment in rest.split('/') {
        let (name, is_param) = match segment.strip_prefix(':') {
            Some(name) => (name, true),
            None => (segment, false),
        };
        let well_formed = !name.is_empty()
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
            });
        if !well_formed {
            return Err("segments must be lowercase names or :placeholders, with no query string or fragment".into());
        }
        if !is_param && looks_like_id(name) {
            return Err("a segment looks like a raw id: send the route template (`:id`)".into());
        }
    }
    Ok(())
}

/// A literal segment that [`looks_like_id`], as a JSON Schema pattern (a
/// search, so no look-around): digits only, or 8 or more of `0-9 a-f -`
/// with a digit among them, written as one branch per place of the first
/// digit it finds.
pub(crate) const RAW_ID_SEGMENT: &str = concat!(
    "(?:^|/)(?:[0-9]+",
    "|[0-9][0-9a-f-]{7,}",
    "|[0-9a-f-][0-9][0-9a-f-]{6,}",
    "|[0-9a-f-]{2}[0-9][0-9a-f-]{5,}",
    "|[0-9a-f-]{3}[0-9][0-9a-f-]{4,}",
    "|[0-9a-f-]{4}[0-9][0-9a-f-]{3,}",
    "|[0-9a-f-]{5}[0-9][0-9a-f-]{2,}",
    "|[0-9a-f-]{6}[0-9][0-9a-f-]+",
    "|[0-9a-f-]{7,}[0-9][0-9a-f-]*",
    ")(?:/|$)"
);

fn looks_like_id(segment: &str) -> bool {
    let all_digits = segment.bytes().all(|b| b.is_ascii_digit());
    let hexish = segment.len() >= 8
        && segment.bytes().any(|b| b.is_ascii_digit())
        && segment.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    all_digits || hexish
}

impl From<RouteTemplate> for String {
    fn from(r: RouteTemplate) -> String {
        r.0
    }
}

impl fmt::Display for RouteTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RouteTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RouteTemplate({})", self.0)
    }
}

impl JsonSchema for RouteTemplate {
    fn schema_name() -> Cow<'static, str> {
        "RouteTemplate".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": MAX_ROUTE_LEN,
            "pattern": "^/$|^(/:?[a-z0-9_.-]+)+$",
            "not": {"pattern": RAW_ID_SEGMENT},
            "description": "A route template such as `/reports/:id`: literal lowercase segments or `:placeholders`, never a raw id (a literal segment of digits only, or of 8 or more hex digits and dashes with a digit among them), query string or fragment.",
            "examples": ["/", "/reports", "/reports/:id", "/compare"],
        })
    }
}

impl WireEvent for CloudEvent {
    fn event_id(&self) -> EventId {
        self.event_id
    }

    fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }

    fn validate(&self, now: DateTime<Utc>) -> Result<(), Violation> {
        crate::envelope::check_envelope(self.schema_version, self.event_id, self.timestamp, now)?;
        match (self.event_type, &self.sources) {
            (CloudEventType::ComparisonSources, None) => {
                return Err(Violation::new(
                    "sources",
                    "is required on comparison_sources events",
                ));
            }
            (CloudEventType::ComparisonSources, Some(sources)) => {
                if sources.is_empty() || sources.len() > MAX_COMPARISON_SOURCES {
                    return Err(Violation::new(
                        "sources",
                        format!("must name 1 to {MAX_COMPARISON_SOURCES} sources"),
                    ));
                }
                for (i, source) in sources.iter().enumerate() {
                    check_token(source, &format!("sources[{i}]"), MAX_NAME_LEN)?;
                }
            }
            (_, Some(_)) => {
                return Err(Violation::new(
                    "sources",
                    "is only allowed on comparison_sources events",
                ));
            }
            (_, None) => {}
        }
        match (self.event_type, &self.metric) {
            (CloudEventType::TrendMetricSelected, None) => Err(Violation::new(
                "metric",
                "is required on trend_metric_selected events",
            )),
            (CloudEventType::TrendMetricSelected, Some(metric)) => {
                check_token(metric, "metric", MAX_NAME_LEN)
            }
            (_, Some(_)) => Err(Violation::new(
                "metric",
                "is only allowed on trend_metric_selected events",
            )),
            (_, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The schema's pattern for a raw id segment says what `looks_like_id` does.
        #[test]
        fn the_schemas_raw_id_pattern_is_looks_like_id(segment in "[0-9a-f\\-xyz_.]{1,14}") {
            let raw_id = jsonschema::validator_for(&serde_json::json!({"pattern": RAW_ID_SEGMENT})).unwrap();
            let route = format!("/reports/{segment}");
            proptest::prop_assert_eq!(looks_like_id(&segment), raw_id.is_valid(&serde_json::json!(route)), "{}", segment);
        }
    }

    #[test]
    fn routes() {
        for ok in [
            "/",
            "/reports",
            "/reports/:id",
            "/projects/:project/compare",
            "/v2/settings",
        ] {
            assert!(check_route(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "reports",
            "/reports/",
            "/reports//x",
            "/reports/123",
            "/reports/3f2a9c1e",
            "/reports/0b5c2f3a-7d1e-4c3b-9a2f-1e2d3c4b5a69",
            "/reports?id=3",
            "/reports#top",
            "/Reports",
            "/:",
        ] {
            assert!(check_route(bad).is_err(), "{bad}");
        }
        assert!(check_route(&format!("/{}", "a".repeat(MAX_ROUTE_LEN))).is_err());
    }

    #[test]
    fn action_kinds() {
        let actions: Vec<_> = CloudEventType::ALL
            .iter()
            .filter(|t| t.is_action())
            .collect();
        assert_eq!(actions.len(), 8);
    }
}
