//! What the desktop app shows, as one value ([`AppState`]) and the pure function that
//! folds the session's [`ClientEvent`]s into it ([`View::apply`]). No I/O: unit tests feed
//! events and read the state.

use super::presentation::StatusPresentation;
use crate::event::{ClientEvent, FloorEvent, Status};
use roger_protocol::{ChannelId, ChannelInfo, ErrorAction, ErrorBody, ErrorCode, Member};
use serde::Serialize;

/// The push-to-talk button's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PttState {
    /// Nobody is talking; press to talk.
    Idle,
    /// Pressed; waiting for the floor.
    Requesting,
    /// This user is on the air until `until_ms` (Unix ms) at the latest.
    Talking {
        /// When the server's max talk time ends the transmission.
        until_ms: u64,
    },
    /// Pressed, but `holder` is talking (floor denied).
    Busy {
        /// Who holds the floor.
        holder: String,
    },
    /// Not pressed; `name` is talking.
    Listening {
        /// Who is talking.
        name: String,
    },
    /// The server ended this user's transmission (max talk time, or it took the floor)
    /// while the key is still down: nothing is sent until the key is released.
    TimeUp,
}

/// An error as the banner shows it: the code to act on, the user's message, details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct AppError {
    /// The machine code (the UI acts on it and on `action`, never on text).
    pub code: ErrorCode,
    /// What the user reads.
    pub message: String,
    /// What the banner offers.
    pub action: ErrorAction,
    /// The technical detail (the error's own message), for "details".
    pub detail: String,
}

impl AppError {
    /// The banner form of an error.
    pub fn from_body(error: &ErrorBody) -> AppError {
        AppError {
            code: error.code,
            message: error.code.user_message().to_owned(),
            action: error.code.action(),
            detail: error.message.clone(),
        }
    }
}

/// Everything the window shows except levels (which stream separately).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct AppState {
    /// The connection's status (dot, tray, text).
    pub status: Status,
    /// Whether a session exists (signed in), whatever its status.
    pub signed_in: bool,
    /// Where the saved sign-in token is kept (`None`: no token saved). The token itself
    /// never reaches the window.
    pub token_store: Option<super::credentials::TokenStore>,
    /// The server of the session.
    pub server_url: String,
    /// Who the server says we are.
    pub user: Option<Member>,
    /// Channels the token allows.
    pub channels: Vec<ChannelInfo>,
    /// The channel PTT talks to.
    pub channel: Option<ChannelId>,
    /// Its members.
    pub members: Vec<Member>,
    /// Who is talking in it (this user included).
    pub talker: Option<Member>,
    /// The PTT button.
    pub ptt: PttState,
    /// Whether the microphone test (talk to the echo channel) is on.
    pub mic_test: bool,
    /// The error banner, if any.
    pub error: Option<AppError>,
    /// How the status looks (dot, text, tooltip): what the window's header and the tray
    /// both show. Filled by [`View::snapshot`] from `status` and `error`.
    pub presentation: StatusPresentation,
}

impl Default for AppState {
    fn default() -> Self {
        AppState {
            status: Status::Offline,
            signed_in: false,
            token_store: None,
            server_url: String::new(),
            user: None,
            channels: Vec::new(),
            channel: None,
            members: Vec::new(),
            talker: None,
            ptt: PttState::Idle,
            mic_test: false,
            error: None,
            presentation: StatusPresentation::of(&Status::Offline, None),
        }
    }
}

/// Something the window should announce once (a toast), beside the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// A recovery cycle succeeded.
    Recovered {
        /// How long it took.
        ms: u64,
    },
    /// The server ended this user's transmission.
    TalkEnded {
        /// Why, for the user.
        message: String,
    },
    /// What was said while the connection was down plays now.
    Missed {
        /// Where.
        channel: ChannelId,
        /// Who said it (display name).
        by: String,
        /// How much is played back, ms.
        ms: u64,
    },
}

/// The state plus what the pure fold needs to remember.
#[derive(Debug, Default)]
pub struct View {
    state: AppState,
    /// PTT is held (the key or button is down).
    held: bool,
    /// The last connection error, for the banner's detail if the status turns `Failed`.
    last_error: Option<ErrorBody>,
}

impl View {
    /// The current state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The state as the window and the tray are sent it: with its presentation derived
    /// from the status and the banner (whose message a failure shows, when the codes
    /// agree).
    pub fn snapshot(&self) -> AppState {
        let mut state = self.state.clone();
        let failure = match (&state.status, &state.error) {
            (Status::Failed { code }, Some(e)) if e.code == *code => Some(e.message.as_str()),
            _ => None,
        };
        state.presentation = StatusPresentation::of(&state.status, failure);
        state
    }

    /// Mutable access for the shell's own changes (sign-in, join); callers emit after.
    pub fn state_mut(&mut self) -> &mut AppState {
        &mut self.state
    }

    /// Whether PTT is held.
    pub fn held(&self) -> bool {
        self.held
    }

    /// PTT pressed: `false` when it was already held (key repeat) or the last
    /// transmission was cut while the key stayed down (a stuck key sends nothing more).
    pub fn press(&mut self) -> bool {
        if self.held {
            return false;
        }
        self.held = true;
        self.state.ptt = PttState::Requesting;
        true
    }

    /// PTT released.
    pub fn release(&mut self) {
        self.held = false;
        self.state.ptt = self.idle_ptt();
    }

    /// The floor request was answered.
    pub fn granted(&mut self, until_ms: u64) {
        if self.held {
            self.state.ptt = PttState::Talking { until_ms };
        }
    }

    /// The floor request was denied: `holder` talks.
    pub fn denied(&mut self, holder: &Member) {
        if self.held {
            self.state.ptt = PttState::Busy {
                holder: holder.name.clone(),
            };
        }
    }

    /// The press failed before the floor was asked for (no microphone, not connected).
    pub fn press_failed(&mut self, error: &ErrorBody) {
        self.held = false;
        self.state.ptt = self.idle_ptt();
        self.state.error = Some(AppError::from_body(error));
    }

    /// PTT state when not transmitting: listening to the talker, or idle.
    fn idle_ptt(&self) -> PttState {
        match &self.state.talker {
            Some(t) if Some(&t.user) != self.state.user.as_ref().map(|u| &u.user) => {
                PttState::Listening {
                    name: t.name.clone(),
                }
            }
            _ => PttState::Idle,
        }
    }

    /// Folds one session event in; returns a notice to announce, if any.
    pub fn apply(&mut self, event: &ClientEvent) -> Option<Notice> {
        match event {
            ClientEvent::Status { status } => {
                self.state.status = status.clone();
                match status {
                    Status::Failed { code } => {
                        // A banner for this code (with the server's reason) stays.
                        if self.state.error.as_ref().map(|e| e.code) != Some(*code) {
                            let detail = self
                                .last_error
                                .take()
                                .filter(|e| e.code == *code)
                                .unwrap_or_else(|| ErrorBody::new(*code, code.user_message()));
                            self.state.error = Some(AppError::from_body(&detail));
                        }
                        // Out of every channel now: nobody is known to be there or talking
                        // until a rejoin says so.
                        self.state.talker = None;
                        self.state.members.clear();
                        self.state.ptt = if self.held {
                            PttState::TimeUp
                        } else {
                            PttState::Idle
                        };
                    }
                    // Connected again (a rejoin worked): a connection banner is stale.
                    Status::Connected | Status::Degraded { .. }
                        if self.state.error.as_ref().is_some_and(|e| {
                            matches!(e.action, ErrorAction::Rejoin | ErrorAction::RetryLater)
                        }) =>
                    {
                        self.state.error = None;
                    }
                    _ => {}
                }
                None
            }
            ClientEvent::Welcome { user, channels } => {
                self.state.user = Some(user.clone());
                self.state.channels = channels.clone();
                None
            }
            ClientEvent::Joined { channel } => {
                if self.state.channel.as_ref() == Some(&channel.id) {
                    self.state.members = channel.members.clone();
                    self.state.talker = match &channel.floor {
                        roger_protocol::FloorState::Taken { holder, .. } => Some(holder.clone()),
                        roger_protocol::FloorState::Idle => None,
                    };
                    if !self.held {
                        self.state.ptt = self.idle_ptt();
                    }
                }
                None
            }
            ClientEvent::Left { channel } => {
                if self.state.channel.as_ref() == Some(channel) {
                    self.state.channel = None;
                    self.state.members.clear();
                    self.state.talker = None;
                }
                None
            }
            ClientEvent::MemberJoined { channel, member } => {
                if self.state.channel.as_ref() == Some(channel)
                    && !self.state.members.iter().any(|m| m.user == member.user)
                {
                    self.state.members.push(member.clone());
                }
                None
            }
            ClientEvent::MemberLeft { channel, member } => {
                if self.state.channel.as_ref() == Some(channel) {
                    self.state.members.retain(|m| m.user != member.user);
                }
                None
            }
            ClientEvent::Floor { channel, floor } => self.floor(channel, floor),
            ClientEvent::Recovered { time_to_recover_ms } => Some(Notice::Recovered {
                ms: *time_to_recover_ms,
            }),
            ClientEvent::Error { error } => {
                match error.code.action() {
                    // The user must act now: banner at once.
                    ErrorAction::PickDevice | ErrorAction::SignIn | ErrorAction::Update => {
                        self.state.error = Some(AppError::from_body(error));
                    }
                    // Connection trouble heals on its own; the banner appears only when
                    // the status says it gave up, with this error's detail.
                    ErrorAction::Rejoin | ErrorAction::RetryLater => {
                        self.last_error = Some(error.clone());
                    }
                    ErrorAction::None => {
                        tracing::debug!(code = %error.code, "informational error not bannered");
                    }
                }
                None
            }
            ClientEvent::MissedReplay {
                channel,
                by,
                missed_ms,
                ..
            } => Some(Notice::Missed {
                channel: channel.clone(),
                by: by.name.clone(),
                ms: *missed_ms,
            }),
            ClientEvent::AudioLevel { .. }
            | ClientEvent::ReplayPaused { .. }
            | ClientEvent::ReplayDone { .. } => None,
        }
    }

    fn floor(&mut self, channel: &ChannelId, floor: &FloorEvent) -> Option<Notice> {
        if self.state.channel.as_ref() != Some(channel) && !self.state.mic_test {
            return None;
        }
        let ours = self.state.channel.as_ref() == Some(channel);
        match floor {
            FloorEvent::Granted { .. } => {
                if ours {
                    self.state.talker = self.state.user.clone();
                }
                None
            }
            FloorEvent::Denied { holder } | FloorEvent::Taken { by: holder } => {
                if ours {
                    self.state.talker = Some(holder.clone());
                    let me = self.state.user.as_ref().map(|u| &u.user) == Some(&holder.user);
                    if !self.held {
                        self.state.ptt = self.idle_ptt();
                    } else if !me && matches!(self.state.ptt, PttState::Talking { .. }) {
                        // Talking, and the floor went to someone else (it could not be
                        // re-acquired after a reconnect): not on the air any more.
                        self.state.ptt = PttState::Busy {
                            holder: holder.name.clone(),
                        };
                    }
                }
                None
            }
            FloorEvent::Released | FloorEvent::Idle => {
                if ours {
                    self.state.talker = None;
                    if !self.held {
                        self.state.ptt = PttState::Idle;
                    } else if matches!(self.state.ptt, PttState::Busy { .. }) {
                        // Still held after a denial and the floor is free now: PTT is not
                        // re-requested behind the user's back; the button says busy with
                        // nobody named ("release and press again") until the release.
                        self.state.ptt = PttState::Busy {
                            holder: String::new(),
                        };
                    }
                }
                None
            }
            FloorEvent::Revoked { reason } => {
                if ours {
                    self.state.talker = None;
                }
                let message = match reason {
                    roger_protocol::RevokeReason::MaxTalkTime => {
                        "Your transmission reached the maximum talk time and was ended. Release the key to talk again."
                    }
                    _ => "The server ended your transmission.",
                };
                self.state.ptt = if self.held {
                    PttState::TimeUp
                } else {
                    self.idle_ptt()
                };
                Some(Notice::TalkEnded {
                    message: message.to_owned(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roger_protocol::{ChannelState, FloorState, RevokeReason, UserId};

    fn member(id: &str) -> Member {
        Member {
            user: UserId(id.into()),
            name: id.to_uppercase(),
        }
    }

    fn joined(view: &mut View, members: &[&str]) {
        view.state_mut().channel = Some(ChannelId("ops".into()));
        view.apply(&ClientEvent::Welcome {
            user: member("me"),
            channels: vec![],
        });
        view.apply(&ClientEvent::Joined {
            channel: ChannelState {
                id: ChannelId("ops".into()),
                members: members.iter().map(|m| member(m)).collect(),
                floor: FloorState::Idle,
                downlink_ssrc: 1,
                recv_slots: 1,
            },
        });
    }

    fn floor(f: FloorEvent) -> ClientEvent {
        ClientEvent::Floor {
            channel: ChannelId("ops".into()),
            floor: f,
        }
    }

    #[test]
    fn a_press_requests_then_talks_then_release_is_idle() {
        let mut v = View::default();
        joined(&mut v, &["me", "bob"]);
        assert!(v.press());
        assert_eq!(v.state().ptt, PttState::Requesting);
        assert!(!v.press(), "a repeated press is ignored");
        v.granted(5);
        v.apply(&floor(FloorEvent::Granted { expires_in_ms: 5 }));
        assert_eq!(v.state().ptt, PttState::Talking { until_ms: 5 });
        assert_eq!(v.state().talker, Some(member("me")));
        v.release();
        v.apply(&floor(FloorEvent::Released));
        assert_eq!(v.state().ptt, PttState::Idle);
        assert_eq!(v.state().talker, None);
    }

    #[test]
    fn someone_else_talking_is_listening_and_a_press_is_busy() {
        let mut v = View::default();
        joined(&mut v, &["me", "bob"]);
        v.apply(&floor(FloorEvent::Taken { by: member("bob") }));
        assert_eq!(v.state().ptt, PttState::Listening { name: "BOB".into() });
        v.press();
        v.denied(&member("bob"));
        assert_eq!(
            v.state().ptt,
            PttState::Busy {
                holder: "BOB".into()
            }
        );
        v.release();
        assert_eq!(v.state().ptt, PttState::Listening { name: "BOB".into() });
        v.apply(&floor(FloorEvent::Idle));
        assert_eq!(v.state().ptt, PttState::Idle);
    }

    #[test]
    fn a_revoked_floor_with_the_key_down_is_time_up_until_release() {
        let mut v = View::default();
        joined(&mut v, &["me"]);
        v.press();
        v.granted(5);
        let notice = v.apply(&floor(FloorEvent::Revoked {
            reason: RevokeReason::MaxTalkTime,
        }));
        assert!(matches!(notice, Some(Notice::TalkEnded { .. })));
        assert_eq!(v.state().ptt, PttState::TimeUp);
        assert!(!v.press(), "the stuck key does not request again");
        assert_eq!(v.state().ptt, PttState::TimeUp);
        v.release();
        assert_eq!(v.state().ptt, PttState::Idle);
        assert!(v.press());
    }

    #[test]
    fn losing_the_floor_to_someone_else_while_talking_is_busy() {
        let mut v = View::default();
        joined(&mut v, &["me", "bob"]);
        v.press();
        v.granted(5);
        v.apply(&floor(FloorEvent::Granted { expires_in_ms: 5 }));
        v.apply(&floor(FloorEvent::Taken { by: member("bob") }));
        assert_eq!(
            v.state().ptt,
            PttState::Busy {
                holder: "BOB".into()
            }
        );
    }

    #[test]
    fn failed_forgets_members_and_keeps_a_specific_banner() {
        let mut v = View::default();
        joined(&mut v, &["me", "bob"]);
        v.apply(&ClientEvent::Error {
            error: ErrorBody::new(ErrorCode::TokenExpired, "exp 12:00"),
        });
        v.apply(&ClientEvent::Status {
            status: Status::Failed {
                code: ErrorCode::TokenExpired,
            },
        });
        assert_eq!(v.state().error.as_ref().unwrap().detail, "exp 12:00");
        assert!(v.state().members.is_empty());
        assert_eq!(
            v.state().channel,
            Some(ChannelId("ops".into())),
            "kept for rejoin"
        );
    }

    #[test]
    fn members_follow_joins_and_leaves() {
        let mut v = View::default();
        joined(&mut v, &["me"]);
        let ch = ChannelId("ops".into());
        v.apply(&ClientEvent::MemberJoined {
            channel: ch.clone(),
            member: member("bob"),
        });
        v.apply(&ClientEvent::MemberJoined {
            channel: ch.clone(),
            member: member("bob"),
        });
        assert_eq!(v.state().members.len(), 2);
        v.apply(&ClientEvent::MemberJoined {
            channel: ChannelId("elsewhere".into()),
            member: member("eve"),
        });
        assert_eq!(v.state().members.len(), 2);
        v.apply(&ClientEvent::MemberLeft {
            channel: ch,
            member: member("bob"),
        });
        assert_eq!(v.state().members, vec![member("me")]);
    }

    #[test]
    fn failed_shows_a_banner_that_a_successful_rejoin_clears() {
        let mut v = View::default();
        joined(&mut v, &["me"]);
        v.apply(&ClientEvent::Error {
            error: ErrorBody::new(ErrorCode::SignalingUnreachable, "connect refused"),
        });
        v.apply(&ClientEvent::Status {
            status: Status::Failed {
                code: ErrorCode::SignalingUnreachable,
            },
        });
        let e = v.state().error.clone().expect("banner");
        assert_eq!(e.code, ErrorCode::SignalingUnreachable);
        assert_eq!(e.action, ErrorAction::Rejoin);
        assert_eq!(e.detail, "connect refused", "the specific error is kept");
        v.apply(&ClientEvent::Status {
            status: Status::Connecting,
        });
        assert!(v.state().error.is_some());
        v.apply(&ClientEvent::Status {
            status: Status::Connected,
        });
        assert!(v.state().error.is_none());
    }

    #[test]
    fn a_device_error_is_bannered_with_pick_device_and_recovery_is_a_notice() {
        let mut v = View::default();
        v.apply(&ClientEvent::Error {
            error: ErrorBody::new(ErrorCode::MediaDeviceError, "mic gone"),
        });
        assert_eq!(
            v.state().error.as_ref().map(|e| e.action),
            Some(ErrorAction::PickDevice)
        );
        assert_eq!(
            v.apply(&ClientEvent::Recovered {
                time_to_recover_ms: 800
            }),
            Some(Notice::Recovered { ms: 800 })
        );
    }
}
