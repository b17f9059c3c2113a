//! `roger-bot history`: a channel's recorded transmissions, listed, and with `--out`
//! saved as 48 kHz mono WAV files named `<id>.wav`.
//!
//! It needs no media: one signaling socket (`hello`, `history`, `history_fetch` per
//! transmission, `bye`). Like any `hello`, it replaces another session of the same user.

use crate::output::Output;
use roger_client::audio::write_wav;
use roger_client::manager::replay::decode_frames;
use roger_client::protocol::*;
use roger_client::signaling::{tls_config, Signaling};
use roger_client::ClientConfig;
use std::path::{Path, PathBuf};

/// Lists `channel`'s history; saves each transmission into `dir` when given.
pub async fn run(
    config: ClientConfig,
    out: &Output,
    channel: ChannelId,
    dir: Option<PathBuf>,
) -> Result<(), ErrorBody> {
    let tls = tls_config(config.extra_ca_pem.as_deref())?;
    let (sig, _events) =
        Signaling::connect_with(&config.server_url, config.request_timeout, Some(tls)).await?;
    match sig
        .request(Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: config.token.clone(),
            client: config.client_name.clone(),
        })
        .await?
    {
        Response::Welcome(_) => {}
        other => return Err(unexpected("welcome", &other)),
    }
    let transmissions = match sig
        .request(Request::History {
            channel: channel.clone(),
            since_ms: None,
        })
        .await?
    {
        Response::History { transmissions, .. } => transmissions,
        other => return Err(unexpected("history", &other)),
    };
    if let Some(dir) = &dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            ErrorBody::new(
                ErrorCode::InvalidSettings,
                format!("cannot create --out {}: {e}", dir.display()),
            )
        })?;
    }
    for t in &transmissions {
        out.line(
            "transmission",
            serde_json::json!({
                "channel": t.channel,
                "id": t.id,
                "by": t.by.name,
                "user": t.by.user,
                "start_ms": t.start_ms,
                "duration_ms": t.duration_ms,
                "ended": t.ended,
            }),
            || {
                format!(
                    "{}  {} ms  {}  ({}{})",
                    t.start_ms,
                    t.duration_ms,
                    t.by.name,
                    t.id,
                    if t.ended { "" } else { ", still talking" }
                )
            },
        );
        if let Some(dir) = &dir {
            // The id names a file: only what a server makes ([0-9a-z-]).
            let safe = !t.id.as_str().is_empty()
                && t.id
                    .as_str()
                    .chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || c == '-');
            if !safe {
                return Err(ErrorBody::new(
                    ErrorCode::MalformedMessage,
                    format!(
                        "the server sent a transmission id that is not a file name: {:?}",
                        t.id
                    ),
                ));
            }
            let answer = sig
                .request(Request::HistoryFetch {
                    id: t.id.clone(),
                    from_ms: 0,
                })
                .await;
            let frames = match answer {
                Ok(Response::HistoryAudio { frames, .. }) => frames,
                // Evicted since the list: said, and the others are still saved.
                Err(e) if e.code == ErrorCode::TransmissionNotFound => {
                    out.error(&e);
                    continue;
                }
                Ok(other) => return Err(unexpected("history_audio", &other)),
                Err(e) => return Err(e),
            };
            save(&dir.join(format!("{}.wav", t.id)), &frames)?;
        }
    }
    let _ = sig.request(Request::Bye).await;
    sig.close();
    out.line(
        "done",
        serde_json::json!({ "transmissions": transmissions.len() }),
        || format!("{} transmissions in {channel}", transmissions.len()),
    );
    Ok(())
}

/// Decodes `frames` onto their timeline and writes a WAV.
fn save(path: &Path, frames: &[HistoryFrame]) -> Result<(), ErrorBody> {
    write_wav(path, &decode_frames(frames, 0, u64::MAX)?)
}

fn unexpected(wanted: &str, got: &Response) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::InternalError,
        format!("expected {wanted}, the server answered {got:?}"),
    )
}
