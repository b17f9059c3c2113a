//! What the user sees of the connection, computed once: the dot's colour, the status
//! text, the tray's tooltip, and the banner's message and action for each error code.
//!
//! The window (through [`AppState::presentation`](super::AppState)) and the tray both
//! read a [`StatusPresentation`]; neither derives its own from the status, so they
//! cannot disagree. Change what the dot shows here.

use crate::event::Status;
use roger_protocol::{ErrorAction, ErrorCode};
use serde::Serialize;

/// The status dot's colour (the window's dot and the tray icon).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum DotColor {
    /// Connected.
    Green,
    /// Connecting, reconnecting or degraded.
    Amber,
    /// Failed: the user must act.
    Red,
    /// Offline.
    Grey,
}

impl DotColor {
    /// Its name, as the window's `data-color` says it (and the log's "status dot").
    pub fn name(self) -> &'static str {
        match self {
            DotColor::Green => "green",
            DotColor::Amber => "amber",
            DotColor::Red => "red",
            DotColor::Grey => "grey",
        }
    }

    /// The colour as RGB (the tray draws its icon in it; the window's CSS uses the same).
    pub fn rgb(self) -> [u8; 3] {
        match self {
            DotColor::Green => [0x2e, 0xa0, 0x43],
            DotColor::Amber => [0xe3, 0x9b, 0x0b],
            DotColor::Red => [0xd0, 0x31, 0x2d],
            DotColor::Grey => [0x8a, 0x8f, 0x98],
        }
    }
}

/// The connection as the window's header and the tray show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct StatusPresentation {
    /// The dot.
    pub dot: DotColor,
    /// The status text without the ticking countdown ("Reconnecting (2/5)"): what the
    /// header shows first and what a screen reader is told.
    pub label: String,
    /// When the next try is due (Unix ms): the header counts down to it after the
    /// label ("next try in 3 s", "next try now").
    pub countdown_to_ms: Option<u64>,
    /// The tray icon's tooltip.
    pub tooltip: String,
}

impl StatusPresentation {
    /// How `status` looks. For `Failed`, `failure` (the banner's message for the same
    /// code) is preferred to the code's generic sentence.
    pub fn of(status: &Status, failure: Option<&str>) -> StatusPresentation {
        let (dot, label, countdown_to_ms, tray) = match status {
            Status::Connected => (
                DotColor::Green,
                "Connected".to_owned(),
                None,
                "connected".to_owned(),
            ),
            Status::Connecting => (
                DotColor::Amber,
                "Connecting…".to_owned(),
                None,
                "connecting".to_owned(),
            ),
            Status::Degraded { reason } if reason.is_empty() => (
                DotColor::Amber,
                "Degraded".to_owned(),
                None,
                "degraded".to_owned(),
            ),
            Status::Degraded { reason } => (
                DotColor::Amber,
                format!("Degraded: {reason}"),
                None,
                format!("degraded ({reason})"),
            ),
            Status::Reconnecting {
                attempt,
                max,
                retry_at_ms,
            } => (
                DotColor::Amber,
                format!("Reconnecting ({attempt}/{max})"),
                Some(*retry_at_ms),
                format!("reconnecting ({attempt}/{max})"),
            ),
            Status::Failed { code } => {
                let message = failure
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| code.user_message());
                (
                    DotColor::Red,
                    format!("Failed: {message}"),
                    None,
                    format!("failed ({code})"),
                )
            }
            Status::Offline => (
                DotColor::Grey,
                "Offline".to_owned(),
                None,
                "offline".to_owned(),
            ),
        };
        StatusPresentation {
            dot,
            label,
            countdown_to_ms,
            tooltip: format!("Roger: {tray}"),
        }
    }
}

/// The banner's message and action for an error code (the one table both come from).
pub fn error_presentation(code: ErrorCode) -> (&'static str, ErrorAction) {
    (code.user_message(), code.action())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses() -> Vec<Status> {
        let mut all = vec![
            Status::Offline,
            Status::Connecting,
            Status::Connected,
            Status::Degraded {
                reason: String::new(),
            },
            Status::Degraded {
                reason: "poor connection: high loss or delay".into(),
            },
            Status::Reconnecting {
                attempt: 2,
                max: 5,
                // The window's tests' clock is 1_700_000_000_000: 3 s before this.
                retry_at_ms: 1_700_000_003_000,
            },
        ];
        all.extend(ErrorCode::ALL.iter().map(|&code| Status::Failed { code }));
        all
    }

    #[test]
    fn every_status_has_one_colour_a_label_and_a_tooltip() {
        for s in statuses() {
            let p = StatusPresentation::of(&s, None);
            let want = match s {
                Status::Connected => DotColor::Green,
                Status::Connecting | Status::Reconnecting { .. } | Status::Degraded { .. } => {
                    DotColor::Amber
                }
                Status::Failed { .. } => DotColor::Red,
                Status::Offline => DotColor::Grey,
            };
            assert_eq!(p.dot, want, "{s:?}");
            assert!(
                !p.label.is_empty() && p.tooltip.starts_with("Roger: "),
                "{s:?}"
            );
            assert_eq!(
                p.countdown_to_ms.is_some(),
                matches!(s, Status::Reconnecting { .. })
            );
        }
    }

    #[test]
    fn every_error_code_has_a_message_and_an_action() {
        for &code in ErrorCode::ALL {
            let (message, action) = error_presentation(code);
            assert!(message.ends_with('.'), "{code}: {message:?}");
            // Bad credentials are not fixed by rejoining with them.
            if matches!(code, ErrorCode::TokenExpired | ErrorCode::TokenInvalid) {
                assert_eq!(action, ErrorAction::SignIn, "{code}");
            }
            let p = StatusPresentation::of(&Status::Failed { code }, None);
            assert_eq!(p.label, format!("Failed: {message}"));
            assert_eq!(p.tooltip, format!("Roger: failed ({code})"));
        }
    }

    #[test]
    fn a_failure_shows_the_banners_message_for_its_code() {
        let p = StatusPresentation::of(
            &Status::Failed {
                code: ErrorCode::TokenExpired,
            },
            Some("Token expired at 10:00"),
        );
        assert_eq!(p.label, "Failed: Token expired at 10:00");
    }

    /// What the window's tests render: Rust's presentation of each status, so the
    /// header they check shows exactly what the tray shows (`make bindings` rewrites it).
    #[test]
    fn the_windows_test_fixture_is_what_rust_presents() {
        #[derive(Serialize)]
        struct Case {
            status: Status,
            failure: Option<&'static str>,
            presentation: StatusPresentation,
        }
        const NOW: u64 = 1_700_000_000_000;
        let mut cases: Vec<(Status, Option<&'static str>)> =
            statuses().into_iter().map(|s| (s, None)).collect();
        cases.extend([
            (
                Status::Degraded {
                    reason: "high packet loss".into(),
                },
                None,
            ),
            (
                Status::Reconnecting {
                    attempt: 1,
                    max: 5,
                    retry_at_ms: NOW + 2500,
                },
                None,
            ),
            (
                Status::Reconnecting {
                    attempt: 1,
                    max: 5,
                    retry_at_ms: NOW,
                },
                None,
            ),
            (
                Status::Failed {
                    code: ErrorCode::TokenExpired,
                },
                Some("Token expired at 10:00"),
            ),
            (
                Status::Failed {
                    code: ErrorCode::SignalingUnreachable,
                },
                Some("Cannot reach the server. Check the address."),
            ),
        ]);
        let cases: Vec<Case> = cases
            .into_iter()
            .map(|(status, failure)| Case {
                presentation: StatusPresentation::of(&status, failure),
                status,
                failure,
            })
            .collect();
        let json = serde_json::to_string_pretty(&cases).unwrap() + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../ui/test/presentations.json");
        if std::env::var_os("UPDATE_BINDINGS").is_some() {
            std::fs::write(&path, &json).expect("write ui/test/presentations.json");
            return;
        }
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            current == json,
            "ui/test/presentations.json is stale: run `make bindings` and commit it"
        );
    }

    #[test]
    fn the_windows_dot_colours_are_the_trays() {
        let css = include_str!("../../../../ui/src/style.css");
        for (dot, name) in [
            (DotColor::Green, "green"),
            (DotColor::Amber, "amber"),
            (DotColor::Red, "red"),
            (DotColor::Grey, "grey"),
        ] {
            assert_eq!(serde_json::to_string(&dot).unwrap(), format!("\"{name}\""));
            assert_eq!(dot.name(), name);
            let [r, g, b] = dot.rgb();
            let decl = format!("--dot-{name}: #{r:02x}{g:02x}{b:02x};");
            assert!(css.contains(&decl), "style.css lacks {decl}");
        }
    }
}
