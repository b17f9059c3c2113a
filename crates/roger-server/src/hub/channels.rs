//! Channels and floors: join, leave, floor request and release, and the notifications
//! they send to every member.

use super::*;

impl Hub {
    pub(super) fn channel_state(
        &self,
        st: &HubState,
        session: &SessionId,
        ch: &ChannelId,
    ) -> Option<ChannelState> {
        let c = st.channels.get(ch)?;
        let s = st.sessions.get(session)?;
        let now = Instant::now();
        let remote_floor = c.remote_floor.as_ref().map(|f| FloorState::Taken {
            holder: f.member.clone(),
            expires_in_ms: f.deadline_ms.saturating_sub(unix_ms()),
        });
        Some(ChannelState {
            id: ch.clone(),
            members: c
                .members
                .iter()
                .map(|(_, m)| m.clone())
                .chain(c.remote.values().map(|r| r.member.clone()))
                .collect(),
            floor: match c.floor.holder() {
                Some(h) => FloorState::Taken {
                    holder: h.member.clone(),
                    expires_in_ms: h.expires_at.saturating_duration_since(now).as_millis() as u64,
                },
                None => remote_floor.unwrap_or(FloorState::Idle),
            },
            downlink_ssrc: s.downlinks.get(ch).copied().unwrap_or(0),
            recv_slots: s.media.slot_count(),
        })
    }

    /// `join`.
    pub fn join(
        &self,
        session: &SessionId,
        channel: &ChannelId,
    ) -> Result<ChannelState, ErrorBody> {
        let mut st = self.lock();
        let s = st.sessions.get(session).ok_or_else(session_gone)?;
        if !st.channels.contains_key(channel) {
            return Err(ErrorBody::new(
                ErrorCode::ChannelNotFound,
                format!("no channel named \"{channel}\""),
            ));
        }
        if !s.claims.allows(channel) {
            return Err(ErrorBody::new(
                ErrorCode::ChannelNotAllowed,
                format!("your token does not allow channel \"{channel}\""),
            ));
        }
        if !s.channels.contains(channel) {
            let member = s.member.clone();
            let (downlink, _) = s.media.assign_slot(channel);
            let ssrc = downlink.ssrc;
            let s = st.sessions.get_mut(session).expect("checked above");
            s.channels.insert(channel.clone());
            s.downlinks.insert(channel.clone(), ssrc);
            let c = st.channels.get_mut(channel).expect("checked above");
            c.router.add_listener(session.clone(), downlink);
            c.members.push((session.clone(), member.clone()));
            st.members += 1;
            broadcast(
                &st,
                channel,
                Some(session),
                Notification::MemberJoined {
                    channel: channel.clone(),
                    member: member.clone(),
                },
            );
            if let Some(c) = &st.cluster {
                c.send(crate::cluster::Op::Joined(
                    channel.clone(),
                    session.clone(),
                    member,
                ));
                super::cluster::put_record(&st, c, session);
            }
            tracing::info!(session = %session, channel = %channel, "joined");
        }
        publish_gauges(&st);
        Ok(self
            .channel_state(&st, session, channel)
            .expect("session and channel exist"))
    }

    /// `leave`.
    pub fn leave(&self, session: &SessionId, channel: &ChannelId) -> Result<(), ErrorBody> {
        let mut st = self.lock();
        member_of(&st, session, channel)?;
        leave_channel(&mut st, session, channel);
        publish_gauges(&st);
        Ok(())
    }

    /// `floor_request`. In a cluster the lease in Redis decides first.
    pub async fn floor_request(
        &self,
        session: &SessionId,
        channel: &ChannelId,
    ) -> Result<Response, ErrorBody> {
        if let Some(c) = self.cluster() {
            if let Some(answer) = self.floor_request_cluster(c, session, channel).await? {
                return Ok(answer);
            }
        }
        self.floor_request_here(session, channel)
    }

    fn floor_request_here(
        &self,
        session: &SessionId,
        channel: &ChannelId,
    ) -> Result<Response, ErrorBody> {
        let now = Instant::now();
        let mut st = self.lock();
        let s = member_of(&st, session, channel)?;
        if let Some(f) = st.channels[channel]
            .remote_floor
            .as_ref()
            .filter(|f| &f.session != session)
        {
            // Redis away and the mirror says someone on another node talks.
            metrics::counter!("roger_floor_denials_total").increment(1);
            return Ok(Response::FloorDenied {
                channel: channel.clone(),
                holder: f.member.clone(),
            });
        }
        let member = s.member.clone();
        let media = s.media.clone();
        // One microphone, one channel: holding the floor elsewhere ends there first.
        let elsewhere: Vec<ChannelId> = st
            .channels
            .iter()
            .filter(|(id, c)| {
                *id != channel && c.floor.holder().is_some_and(|h| &h.session == session)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let c = st.channels.get_mut(channel).expect("joined channels exist");
        let outcome = c.floor.request(now, session, &member);
        let router = c.router.clone();
        match outcome {
            RequestOutcome::Granted {
                expires_in,
                newly_taken,
            } => {
                for other in elsewhere {
                    release_floor(&mut st, session, &other);
                }
                if newly_taken {
                    router.set_speaker(Some((session.clone(), &member)));
                    if let Some(c) = &st.cluster {
                        c.send(crate::cluster::Op::FloorTaken(
                            channel.clone(),
                            super::cluster::floor_record(session, &member, c, now + expires_in),
                        ));
                    }
                    broadcast(
                        &st,
                        channel,
                        Some(session),
                        Notification::FloorTaken {
                            channel: channel.clone(),
                            by: member,
                            expires_in_ms: expires_in.as_millis() as u64,
                        },
                    );
                    metrics::counter!("roger_floor_grants_total").increment(1);
                }
                media.set_route(Some(router));
                self.timers.notify_one();
                Ok(Response::FloorGranted {
                    channel: channel.clone(),
                    expires_in_ms: expires_in.as_millis() as u64,
                })
            }
            RequestOutcome::Denied { holder } => {
                metrics::counter!("roger_floor_denials_total").increment(1);
                if let Some(c) = &st.cluster {
                    // Redis granted what a local holder has: give the lease back.
                    c.send(crate::cluster::Op::Release(
                        channel.clone(),
                        session.clone(),
                    ));
                }
                Ok(Response::FloorDenied {
                    channel: channel.clone(),
                    holder,
                })
            }
        }
    }

    /// `floor_release`. In a cluster it answers once the lease is gone from Redis, so
    /// nobody who asks after this answer is told the floor is still taken.
    pub async fn floor_release(
        &self,
        session: &SessionId,
        channel: &ChannelId,
    ) -> Result<(), ErrorBody> {
        let released = {
            let mut st = self.lock();
            member_of(&st, session, channel)?;
            release_floor(&mut st, session, channel)
        };
        if released {
            if let Some(c) = self.cluster() {
                c.flush(Duration::from_secs(1)).await;
            }
            Ok(())
        } else {
            Err(ErrorBody::new(
                ErrorCode::FloorNotHeld,
                format!("you do not hold the floor in \"{channel}\""),
            ))
        }
    }
}

/// The session, if it exists and has joined `channel`.
pub(super) fn member_of<'a>(
    st: &'a HubState,
    session: &SessionId,
    channel: &ChannelId,
) -> Result<&'a Session, ErrorBody> {
    let s = st.sessions.get(session).ok_or_else(session_gone)?;
    if s.channels.contains(channel) {
        Ok(s)
    } else {
        Err(ErrorBody::new(
            ErrorCode::NotInChannel,
            format!("join \"{channel}\" first"),
        ))
    }
}

/// Sends `note` to every member of `channel` except `except`.
pub(super) fn broadcast(
    st: &HubState,
    channel: &ChannelId,
    except: Option<&SessionId>,
    note: Notification,
) {
    let Some(c) = st.channels.get(channel) else {
        return;
    };
    for (sid, _) in &c.members {
        if Some(sid) == except {
            continue;
        }
        if let Some(conn) = st.sessions.get(sid).and_then(|s| s.conn.as_ref()) {
            conn.send(ServerMessage::Notification(note.clone()));
        }
    }
}

/// Releases `session`'s floor in `channel` if it holds it; announces `floor_idle`.
pub(super) fn release_floor(st: &mut HubState, session: &SessionId, channel: &ChannelId) -> bool {
    let Some(c) = st.channels.get_mut(channel) else {
        return false;
    };
    if !c.floor.release(session) {
        return false;
    }
    c.router.set_speaker(None);
    if let Some(s) = st.sessions.get(session) {
        s.media.set_route(None);
    }
    if let Some(cl) = &st.cluster {
        cl.send(crate::cluster::Op::Release(
            channel.clone(),
            session.clone(),
        ));
    }
    broadcast(
        st,
        channel,
        Some(session),
        Notification::FloorIdle {
            channel: channel.clone(),
        },
    );
    true
}

/// Announces a revocation: the holder gets `floor_revoked`, everyone else `floor_idle`.
pub(super) fn apply_revoked(st: &mut HubState, channel: &ChannelId, r: Revoked) {
    if let Some(c) = st.channels.get(channel) {
        c.router.set_speaker(None);
    }
    if let Some(cl) = &st.cluster {
        cl.send(crate::cluster::Op::Release(
            channel.clone(),
            r.session.clone(),
        ));
    }
    if let Some(s) = st.sessions.get(&r.session) {
        s.media.set_route(None);
        if let Some(conn) = &s.conn {
            conn.send(ServerMessage::Notification(Notification::FloorRevoked {
                channel: channel.clone(),
                reason: r.reason,
            }));
        }
    }
    tracing::info!(session = %r.session, channel = %channel, reason = ?r.reason, "floor revoked");
    metrics::counter!("roger_floor_revocations_total").increment(1);
    broadcast(
        st,
        channel,
        Some(&r.session),
        Notification::FloorIdle {
            channel: channel.clone(),
        },
    );
}

pub(super) fn leave_channel(st: &mut HubState, session: &SessionId, channel: &ChannelId) {
    let revoked = st
        .channels
        .get_mut(channel)
        .and_then(|c| c.floor.remove(session));
    if let Some(r) = revoked {
        apply_revoked(st, channel, r);
    }
    let Some(s) = st.sessions.get_mut(session) else {
        return;
    };
    s.channels.remove(channel);
    s.downlinks.remove(channel);
    s.media.release_slot(channel);
    let Some(c) = st.channels.get_mut(channel) else {
        return;
    };
    c.router.remove_listener(session);
    let Some(pos) = c.members.iter().position(|(sid, _)| sid == session) else {
        return;
    };
    let (_, member) = c.members.remove(pos);
    st.members -= 1;
    if let Some(cl) = &st.cluster {
        cl.send(crate::cluster::Op::Left(
            channel.clone(),
            session.clone(),
            member.clone(),
        ));
        super::cluster::put_record(st, cl, session);
    }
    broadcast(
        st,
        channel,
        None,
        Notification::MemberLeft {
            channel: channel.clone(),
            member,
        },
    );
    tracing::info!(session = %session, channel = %channel, "left");
}

/// Publishes the hub's gauges from counts kept up to date by each change: constant time,
/// so a flood of requests cannot make every request scan every session.
pub(super) fn publish_gauges(st: &HubState) {
    metrics::gauge!("roger_sessions").set(st.sessions.len() as f64);
    metrics::gauge!("roger_sessions_connected").set(st.connected as f64);
    metrics::gauge!("roger_channel_members").set(st.members as f64);
}
