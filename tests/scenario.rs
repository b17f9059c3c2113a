//! The fault tests' common setup, so each `tests/fault_*.rs` reads as the story it tests.
//!
//! A [`Scenario`] is a [`Lab`] (two network namespaces), a real server in the server's
//! namespace and a temporary directory. Bots run on the [`Side::Near`] side (the client
//! namespace, where the faults happen) or the [`Side::Far`] side (beside the server, on
//! a path that never breaks). A fault is applied for a while with
//! [`Scenario::fault_for`], and the bots' `--json` lines are read with the helpers at
//! the bottom.

use crate::netns::{self, Lab};
use crate::timeline::{audio_at, first_status_after};
use crate::{now_ms, speech_wav, Bot, Plan, Server, TempDir};
use serde_json::Value;
use std::time::Duration;

/// One second.
pub const S: Duration = Duration::from_secs(1);

/// Where a bot runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client namespace: the side whose path is cut, roamed or lossy.
    Near,
    /// The server's namespace: a path that never breaks.
    Far,
}

/// A lab with a server in it.
pub struct Scenario {
    /// The namespaces and their faults.
    pub lab: Lab,
    /// The server, reachable at [`Scenario::url`] from both sides.
    pub server: Server,
    /// The server's signaling URL on its lab address.
    pub url: String,
    /// Recordings and logs of this run.
    pub dir: TempDir,
}

impl Scenario {
    /// A lab and a server with its default configuration; `None` (the test returns)
    /// where namespaces are not available, which [`netns::available`] explains (and
    /// which fails under `CI=true`).
    pub fn start(tag: &str) -> Option<Scenario> {
        Self::start_with(tag, "")
    }

    /// The same with `extra_toml` added to the server's configuration.
    pub fn start_with(tag: &str, extra_toml: &str) -> Option<Scenario> {
        if !netns::available() {
            return None;
        }
        let lab = Lab::create();
        let server = Server::start_in_lab(&lab, extra_toml);
        let url = server.url_at(netns::SERVER_IP);
        Some(Scenario {
            lab,
            server,
            url,
            dir: TempDir::new(tag),
        })
    }

    fn ns(&self, side: Side) -> &str {
        match side {
            Side::Near => &self.lab.client_ns,
            Side::Far => &self.lab.server_ns,
        }
    }

    /// `user` listens to `general` for `seconds`, recording to `<user>.wav` in
    /// [`Scenario::dir`]; returns once it has joined.
    pub fn listener(&self, side: Side, user: &str, seconds: u32) -> Bot {
        let out = self.dir.join(&format!("{user}.wav"));
        let bot = Bot::spawn_with(
            Some(self.ns(side)),
            &self.url,
            &self.server.token(user, &["general"]),
            &[
                "listen",
                "--channel",
                "general",
                "--out",
                out.to_str().expect("utf-8 path"),
                "--seconds",
                &seconds.to_string(),
            ],
        );
        bot.wait_event(15 * S, "joined");
        bot
    }

    /// `user` talks the speech fixture `repeat` times in one transmission, in `general`
    /// (not waited for).
    pub fn talker(&self, side: Side, user: &str, repeat: u32) -> Bot {
        let speech = speech_wav();
        Bot::spawn_with(
            Some(self.ns(side)),
            &self.url,
            &self.server.token(user, &["general"]),
            &[
                "talk",
                "--channel",
                "general",
                "--wav",
                speech.to_str().expect("utf-8 path"),
                "--repeat",
                &repeat.to_string(),
            ],
        )
    }

    /// A `duplex` bot (listens all along, talks the speech fixture per `plan`) as
    /// `user`, with `extra` options (not waited for).
    pub fn duplex(&self, side: Side, user: &str, plan: Plan, extra: &[&str]) -> Bot {
        Bot::duplex(&self.server, self.ns(side), &self.url, user, plan, extra)
    }

    /// Two people talking in turns for `seconds`: `near` and `far`, each every `every`
    /// s from its own offset, `near_extra` options for the near one; returns once both
    /// have joined. The far one starts first: each plan counts from its own join, so
    /// the near one's offset is never shortened by the far one's later join.
    pub fn conversation(
        &self,
        every: f64,
        seconds: f64,
        (near_offset, far_offset): (f64, f64),
        near_extra: &[&str],
    ) -> (Bot, Bot) {
        let plan = |offset| Plan {
            every,
            offset,
            seconds,
        };
        let far = self.duplex(Side::Far, "far", plan(far_offset), &[]);
        let near = self.duplex(Side::Near, "near", plan(near_offset), near_extra);
        far.wait_event(15 * S, "joined");
        near.wait_event(15 * S, "joined");
        (near, far)
    }

    /// Applies `fault` to the lab now, waits `d` and restores the lab: returns when the
    /// fault began and when it ended (Unix ms).
    pub fn fault_for(&self, d: Duration, fault: impl FnOnce(&Lab)) -> (u64, u64) {
        let began = now_ms();
        fault(&self.lab);
        std::thread::sleep(d);
        self.lab.restore();
        (began, now_ms())
    }
}

/// Frames a bot counted in `field` (`frames_received`, `frames_sent`) after `t_ms`.
pub fn frames_after(lines: &[Value], field: &str, t_ms: u64) -> u64 {
    audio_at(lines, field, u64::MAX) - audio_at(lines, field, t_ms)
}

/// When the bot's status first left `Connected` at or after `t_ms`; panics with its
/// lines and `stderr` if it never did.
pub fn noticed_at(lines: &[Value], t_ms: u64, stderr: &str) -> u64 {
    first_status_after(lines, t_ms, |s| s != "Connected")
        .unwrap_or_else(|| panic!("the fault went unnoticed: {lines:#?}\n{stderr}"))
}

/// When the bot was first `Connected` at or after `t_ms`; panics with its lines and
/// `stderr` if it never was.
pub fn connected_at(lines: &[Value], t_ms: u64, stderr: &str) -> u64 {
    first_status_after(lines, t_ms, |s| s == "Connected")
        .unwrap_or_else(|| panic!("never connected again: {lines:#?}\n{stderr}"))
}
