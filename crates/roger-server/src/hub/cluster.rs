//! The hub's side of cluster mode: what it tells Redis (through [`Cluster::send`]), and
//! how it takes in the other nodes' members, floors, media and sessions.
//!
//! Local sessions stay in the hub as before. Members and floor holders on other nodes
//! are mirrored per channel (`Channel::remote`, `Channel::remote_floor`): listed in
//! channel states, announced to local members, and the source of relayed media.

use super::channels::broadcast;
use super::*;
use crate::cluster::relay::Relayed;
use crate::cluster::wire::{BusEvent, FloorRecord, MemberRecord, SessionRecord};
use crate::cluster::{Cluster, Op, Snapshot, View};

impl Hub {
    /// Joins the cluster: from now on changes go to Redis and routers relay.
    pub fn set_cluster(&self, cluster: Arc<Cluster>) {
        let mut st = self.lock();
        for (id, c) in &st.channels {
            c.router.set_relay(cluster.relay().clone(), id.clone());
        }
        st.cluster = Some(cluster);
    }

    /// Whether this is a cluster node that cannot reach Redis now.
    pub fn cluster_degraded(&self) -> bool {
        self.cluster().is_some_and(|c| !c.is_up())
    }

    pub(super) fn cluster(&self) -> Option<Arc<Cluster>> {
        self.lock().cluster.clone()
    }

    /// Every channel's id.
    pub fn channel_ids(&self) -> Vec<ChannelId> {
        self.lock().channels.keys().cloned().collect()
    }

    /// What this node holds, for the heartbeat.
    pub fn cluster_snapshot(&self) -> Snapshot {
        let st = self.lock();
        let Some(cluster) = st.cluster.clone() else {
            return Snapshot::default();
        };
        let node = cluster.node_id().to_owned();
        let mut snap = Snapshot::default();
        for (id, s) in &st.sessions {
            snap.sessions
                .push((s.resume_token.clone(), record(id, s, &node)));
        }
        for (ch, c) in &st.channels {
            for (sid, m) in &c.members {
                snap.members.push((ch.clone(), sid.clone(), m.clone()));
            }
            if let Some(h) = c.floor.holder() {
                snap.floors.push((
                    ch.clone(),
                    floor_record(&h.session, &h.member, &cluster, h.expires_at),
                ));
            }
        }
        snap
    }

    /// Brings the mirrors in line with Redis (every heartbeat).
    pub fn reconcile(&self, view: View) {
        let mut st = self.lock();
        st.live = view.live;
        let channels: Vec<ChannelId> = st.channels.keys().cloned().collect();
        let empty = HashMap::new();
        for ch in channels {
            let want = view.members.get(&ch).unwrap_or(&empty);
            let have: Vec<SessionId> = st.channels[&ch].remote.keys().cloned().collect();
            for sid in have {
                if !want.contains_key(&sid) {
                    remote_left(&mut st, &ch, &sid);
                }
            }
            for (sid, rec) in want {
                remote_joined(&mut st, &ch, sid, rec.clone());
            }
            match view.floors.get(&ch) {
                Some(f) => remote_floor_taken(&mut st, &ch, f.clone()),
                None => {
                    let held = st.channels[&ch]
                        .remote_floor
                        .as_ref()
                        .map(|f| f.session.clone());
                    if let Some(sid) = held {
                        remote_floor_idle(&mut st, &ch, &sid);
                    }
                }
            }
            refresh_targets(&st, &ch);
        }
        let relayed: usize = st
            .channels
            .values()
            .map(|c| c.router.relayed_streams())
            .sum();
        metrics::gauge!("roger_relay_streams").set(relayed as f64);
    }

    /// Applies another node's bus message.
    pub fn apply_bus(&self, from: &str, event: BusEvent) {
        let mut st = self.lock();
        match event {
            BusEvent::Joined {
                channel,
                session,
                member,
            } => {
                if st.channels.contains_key(&channel) {
                    let rec = MemberRecord {
                        member,
                        node: from.to_owned(),
                        epoch: 0,
                    };
                    remote_joined(&mut st, &channel, &session, rec);
                    refresh_targets(&st, &channel);
                }
            }
            BusEvent::Left {
                channel, session, ..
            } => {
                // From the node the member is on: a stale copy elsewhere (its session
                // moved on) does not take it away.
                let from_its_node = st
                    .channels
                    .get(&channel)
                    .and_then(|c| c.remote.get(&session))
                    .is_some_and(|r| r.node == from);
                if from_its_node {
                    remote_left(&mut st, &channel, &session);
                    refresh_targets(&st, &channel);
                }
            }
            BusEvent::FloorTaken { channel, floor } => {
                if st.channels.contains_key(&channel) {
                    remote_floor_taken(&mut st, &channel, floor);
                }
            }
            BusEvent::FloorIdle { channel, session } => {
                let from_its_node = st
                    .channels
                    .get(&channel)
                    .and_then(|c| c.remote_floor.as_ref())
                    .is_some_and(|f| f.node == from);
                if from_its_node {
                    remote_floor_idle(&mut st, &channel, &session);
                }
            }
            BusEvent::Moved { session } => self.drop_moved(&mut st, &session, from),
            BusEvent::Signed {
                user,
                session,
                created_ms,
            } => {
                let Some(old) = st.by_user.get(&user).cloned() else {
                    return;
                };
                let Some(s) = st.sessions.get(&old) else {
                    return;
                };
                // The older of the two goes (ties by id), so two sign-ins at once on
                // two nodes end exactly one.
                if old == session || (s.created_ms, old.as_str()) > (created_ms, session.as_str()) {
                    return;
                }
                tracing::info!(user = %user, old = %old, node = from, "same identity signed in on another node: replacing the older session");
                self.replace_session(&mut st, &old);
                publish_gauges(&st);
            }
        }
    }

    /// A relayed packet from another node: to the local listeners, if its talker holds
    /// the floor here too.
    pub fn relay_in(&self, p: Relayed) {
        let router = {
            let st = self.lock();
            let Some(c) = st.channels.get(&p.channel) else {
                return;
            };
            if c.remote_floor
                .as_ref()
                .is_none_or(|f| f.session != p.session || f.node != p.node)
            {
                metrics::counter!("roger_rtp_dropped_total", "reason" => "relay_not_holder")
                    .increment(1);
                return;
            }
            c.router.clone()
        };
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                marker: p.marker,
                payload_type: crate::media::OPUS_PAYLOAD_TYPE,
                sequence_number: p.seq,
                timestamp: p.timestamp,
                ssrc: p.ssrc,
                ..Default::default()
            },
            payload: p.payload.into(),
        };
        router.forward(Instant::now(), &p.session, &packet);
    }

    /// A local session's resume record went: another node took it over and its `Moved`
    /// was lost. This node's copy goes quietly, as for `Moved`.
    pub fn gone_elsewhere(&self, session: &SessionId) {
        let mut st = self.lock();
        self.drop_moved(&mut st, session, "");
    }

    /// Another node holds the lease of a floor a local session held (two grants while
    /// Redis was away): the local one ends.
    pub fn lost_lease(&self, channel: &ChannelId, session: &SessionId) {
        let mut st = self.lock();
        let holds = st
            .channels
            .get(channel)
            .and_then(|c| c.floor.holder())
            .is_some_and(|h| &h.session == session);
        if holds {
            let revoked = st
                .channels
                .get_mut(channel)
                .and_then(|c| c.floor.remove(session));
            if let Some(r) = revoked {
                super::channels::apply_revoked(&mut st, channel, r);
            }
        }
    }

    /// The session moved to node `to`: this node's copy goes without a word to anyone
    /// (its members see it on `to` now; its floor went along).
    fn drop_moved(&self, st: &mut HubState, session: &SessionId, to: &str) {
        // Mirrors of it elsewhere follow it to its new node.
        for c in st.channels.values_mut() {
            if let Some(rec) = c.remote.get_mut(session) {
                rec.node = to.to_owned();
            }
            if let Some(f) = c.remote_floor.as_mut().filter(|f| &f.session == session) {
                f.node = to.to_owned();
            }
        }
        let Some(s) = st.sessions.remove(session) else {
            return;
        };
        tracing::info!(session = %session, node = to, "session resumed on another node: dropping our copy");
        if let Some(conn) = &s.conn {
            conn.close(CLOSE_POLICY, "resumed on another node");
        }
        st.connected -= usize::from(s.conn.is_some());
        st.by_resume.remove(&s.resume_token);
        if st.by_user.get(&s.member.user) == Some(session) {
            st.by_user.remove(&s.member.user);
        }
        for ch in &s.channels {
            let Some(c) = st.channels.get_mut(ch) else {
                continue;
            };
            c.router.remove_listener(session);
            if let Some(pos) = c.members.iter().position(|(sid, _)| sid == session) {
                let (_, member) = c.members.remove(pos);
                st.members -= 1;
                let c = st.channels.get_mut(ch).expect("present above");
                c.remote.insert(
                    session.clone(),
                    MemberRecord {
                        member,
                        node: to.to_owned(),
                        epoch: 0,
                    },
                );
            }
            let c = st.channels.get_mut(ch).expect("present above");
            if c.floor.holder().is_some_and(|h| &h.session == session) {
                let h = c.floor.holder().cloned().expect("checked");
                c.floor.release(session);
                c.remote_floor = Some(FloorRecord {
                    session: session.clone(),
                    member: h.member,
                    node: to.to_owned(),
                    deadline_ms: deadline_ms(h.expires_at),
                    epoch: 0,
                });
                c.router.set_remote_speaker(Some(session.clone()));
            }
        }
        publish_gauges(st);
        let media = s.media.clone();
        tokio::spawn(async move { media.close().await });
    }

    /// `resume` of a session another node held: it becomes this node's, with its
    /// channels, and its floors if their leases are still its own. Its transports are
    /// built afresh (`resumed.transports` is empty).
    pub(super) async fn adopt(
        self: &Arc<Self>,
        conn: Conn,
        rec: SessionRecord,
        floors: Vec<(ChannelId, FloorRecord)>,
        cluster: Arc<Cluster>,
    ) -> Result<(SessionId, Resumed), ErrorBody> {
        let id = rec.session.clone();
        let node = cluster.node_id().to_owned();
        let now = Instant::now();
        // Floors first (Redis, outside the lock): the lease moves to this node.
        let mut kept = Vec::new();
        for (ch, f) in floors {
            let mut moved = f;
            moved.node = node.clone();
            moved.epoch = cluster.epoch();
            if let Ok(Ok(())) = cluster.acquire(&ch, moved.clone()).await {
                kept.push((ch, moved));
            }
        }
        let mut st = self.lock();
        Self::check_not_draining(&st)?;
        if let Some(e) = self.token_refusal(&st, &rec.claims) {
            return Err(e);
        }
        if let Some(old) = st.by_user.get(&rec.member.user).cloned() {
            let newer_here = st
                .sessions
                .get(&old)
                .is_some_and(|s| (s.created_ms, old.as_str()) > (rec.created_ms, id.as_str()));
            if newer_here {
                // The user signed in again since: that session stands, this one is over.
                return Err(replaced_error());
            }
            if old != id {
                self.replace_session(&mut st, &old);
            }
        }
        self.check_room(&st)?;
        let allowed = st
            .channels
            .values()
            .filter(|c| rec.claims.allows(&c.info.id))
            .count();
        let (media, events) = SessionMedia::new(id.clone(), self.media.clone(), allowed);
        spawn_transport_events(id.clone(), media.clone(), events);
        let token = random_token();
        let expires_at = tokens::expiry_instant(&rec.claims, now);
        st.by_user.insert(rec.member.user.clone(), id.clone());
        st.by_resume.insert(token.clone(), id.clone());
        st.connected += 1;
        st.sessions.insert(
            id.clone(),
            Session {
                member: rec.member.clone(),
                claims: rec.claims.clone(),
                resume_token: token.clone(),
                conn: Some(conn),
                detached_at: None,
                created_ms: rec.created_ms,
                expires_at,
                channels: BTreeSet::new(),
                downlinks: HashMap::new(),
                media: media.clone(),
            },
        );
        cluster.send(Op::Moved(id.clone()));
        let mut joined = Vec::new();
        for ch in &rec.channels {
            if !st.channels.contains_key(ch) || !rec.claims.allows(ch) {
                continue;
            }
            let (downlink, _) = media.assign_slot(ch);
            let ssrc = downlink.ssrc;
            let s = st.sessions.get_mut(&id).expect("inserted above");
            s.channels.insert(ch.clone());
            s.downlinks.insert(ch.clone(), ssrc);
            let c = st.channels.get_mut(ch).expect("checked above");
            c.router.add_listener(id.clone(), downlink);
            c.members.push((id.clone(), rec.member.clone()));
            let was_mirrored = c.remote.remove(&id).is_some();
            st.members += 1;
            if !was_mirrored {
                broadcast(
                    &st,
                    ch,
                    Some(&id),
                    Notification::MemberJoined {
                        channel: ch.clone(),
                        member: rec.member.clone(),
                    },
                );
            }
            cluster.send(Op::Joined(ch.clone(), id.clone(), rec.member.clone()));
            refresh_targets(&st, ch);
            joined.push(ch.clone());
        }
        let mut floors_held = Vec::new();
        for (ch, f) in kept {
            let Some(c) = st.channels.get_mut(&ch) else {
                continue;
            };
            let left = Duration::from_millis(f.deadline_ms.saturating_sub(unix_ms()));
            c.floor.restore(&id, &rec.member, now + left);
            let was = c.remote_floor.take();
            c.router.set_speaker(Some((id.clone(), &rec.member)));
            media.set_route(Some(c.router.clone()));
            if was.is_none_or(|w| w.session != id) {
                broadcast(
                    &st,
                    &ch,
                    Some(&id),
                    Notification::FloorTaken {
                        channel: ch.clone(),
                        by: rec.member.clone(),
                        expires_in_ms: left.as_millis() as u64,
                    },
                );
            }
            cluster.send(Op::FloorTaken(ch.clone(), f));
            floors_held.push(ch);
        }
        let session = st.sessions.get(&id).expect("inserted above");
        cluster.send(Op::PutSession(token.clone(), record(&id, session, &node)));
        let channels = joined
            .iter()
            .filter_map(|ch| self.channel_state(&st, &id, ch))
            .collect();
        tracing::info!(session = %id, from = %rec.node, "session taken over from another node");
        metrics::counter!("roger_sessions_adopted_total").increment(1);
        publish_gauges(&st);
        let ice_servers = self.ice_servers(&rec.member.user, rec.claims.exp);
        drop(st);
        self.timers.notify_one();
        Ok((
            id.clone(),
            Resumed {
                session_id: id,
                resume_token: token,
                ice_servers,
                ping_interval_ms: self.config.session.ping_interval_ms,
                channels,
                transports: vec![],
                floors_held,
                nodes: cluster.live_urls(),
            },
        ))
    }

    /// `floor_request` in a cluster: the lease in Redis decides. With Redis away, a
    /// channel whose members are all here keeps a local floor; any other is refused.
    pub(super) async fn floor_request_cluster(
        &self,
        cluster: Arc<Cluster>,
        session: &SessionId,
        channel: &ChannelId,
    ) -> Result<Option<Response>, ErrorBody> {
        let (member, all_local) = {
            let st = self.lock();
            let s = channels::member_of(&st, session, channel)?;
            let c = &st.channels[channel];
            if c.floor.holder().is_some_and(|h| &h.session == session) {
                return Ok(None); // a holder asking again: nothing changes in Redis
            }
            (s.member.clone(), c.remote.is_empty())
        };
        let max_talk = Duration::from_millis(self.config.floor.max_talk_ms);
        let rec = FloorRecord {
            session: session.clone(),
            member,
            node: cluster.node_id().to_owned(),
            deadline_ms: unix_ms() + max_talk.as_millis() as u64,
            epoch: cluster.epoch(),
        };
        match cluster.acquire(channel, rec).await {
            Ok(Ok(())) => {
                let mut st = self.lock();
                // Granted in Redis: a mirror of an older holder is stale.
                let old = st
                    .channels
                    .get(channel)
                    .and_then(|c| c.remote_floor.as_ref())
                    .map(|f| f.session.clone());
                if let Some(c) = st.channels.get_mut(channel) {
                    if old.is_some() {
                        c.remote_floor = None;
                    }
                }
                Ok(None)
            }
            Ok(Err(holder)) => {
                metrics::counter!("roger_floor_denials_total").increment(1);
                if holder.node != cluster.node_id() {
                    let mut st = self.lock();
                    remote_floor_taken(&mut st, channel, holder.clone());
                }
                Ok(Some(Response::FloorDenied {
                    channel: channel.clone(),
                    holder: holder.member,
                }))
            }
            Err(e) if all_local => {
                tracing::debug!(error = %e, "redis away: a channel with only local members keeps a local floor");
                Ok(None)
            }
            Err(_) => Err(ErrorBody::new(
                ErrorCode::ClusterUnavailable,
                "the server cannot reach the rest of the cluster; try again shortly",
            )),
        }
    }
}

/// Writes `session`'s directory record again (its channels changed), if it is here.
pub(super) fn put_record(st: &HubState, cluster: &Cluster, session: &SessionId) {
    if let Some(s) = st.sessions.get(session) {
        cluster.send(Op::PutSession(
            s.resume_token.clone(),
            record(session, s, cluster.node_id()),
        ));
    }
}

/// A session's directory record.
pub(super) fn record(id: &SessionId, s: &Session, node: &str) -> SessionRecord {
    SessionRecord {
        session: id.clone(),
        member: s.member.clone(),
        claims: s.claims.clone(),
        channels: s.channels.iter().cloned().collect(),
        node: node.to_owned(),
        created_ms: s.created_ms,
    }
}

/// Unix ms of an `Instant` deadline.
pub(super) fn deadline_ms(at: Instant) -> u64 {
    unix_ms() + at.saturating_duration_since(Instant::now()).as_millis() as u64
}

/// A local holder's lease.
pub(super) fn floor_record(
    session: &SessionId,
    member: &Member,
    cluster: &Cluster,
    expires_at: Instant,
) -> FloorRecord {
    FloorRecord {
        session: session.clone(),
        member: member.clone(),
        node: cluster.node_id().to_owned(),
        deadline_ms: deadline_ms(expires_at),
        epoch: cluster.epoch(),
    }
}

fn remote_joined(st: &mut HubState, ch: &ChannelId, sid: &SessionId, rec: MemberRecord) {
    if st.sessions.contains_key(sid) {
        return; // here now (moved): the local entry is the true one
    }
    let c = st.channels.get_mut(ch).expect("caller checked");
    let member = rec.member.clone();
    if c.remote.insert(sid.clone(), rec).is_none() {
        broadcast(
            st,
            ch,
            None,
            Notification::MemberJoined {
                channel: ch.clone(),
                member,
            },
        );
    }
}

fn remote_left(st: &mut HubState, ch: &ChannelId, sid: &SessionId) {
    let c = st.channels.get_mut(ch).expect("caller checked");
    let Some(rec) = c.remote.remove(sid) else {
        return;
    };
    if c.remote_floor.as_ref().is_some_and(|f| &f.session == sid) {
        remote_floor_idle(st, ch, sid);
    }
    broadcast(
        st,
        ch,
        None,
        Notification::MemberLeft {
            channel: ch.clone(),
            member: rec.member,
        },
    );
}

fn remote_floor_taken(st: &mut HubState, ch: &ChannelId, f: FloorRecord) {
    if st.sessions.contains_key(&f.session) {
        return; // the holder is here now; the local floor is the true one
    }
    let c = st.channels.get_mut(ch).expect("caller checked");
    if c.floor.holder().is_some() {
        // A local holder: Redis decides at the next heartbeat (`lost_lease`).
        return;
    }
    let same = c
        .remote_floor
        .as_ref()
        .is_some_and(|o| o.session == f.session);
    let expires_in_ms = f.deadline_ms.saturating_sub(unix_ms());
    let by = f.member.clone();
    c.router.set_remote_speaker(Some(f.session.clone()));
    c.remote_floor = Some(f);
    if !same {
        broadcast(
            st,
            ch,
            None,
            Notification::FloorTaken {
                channel: ch.clone(),
                by,
                expires_in_ms,
            },
        );
    }
}

fn remote_floor_idle(st: &mut HubState, ch: &ChannelId, sid: &SessionId) {
    let c = st.channels.get_mut(ch).expect("caller checked");
    if c.remote_floor.as_ref().is_none_or(|f| &f.session != sid) {
        return;
    }
    c.remote_floor = None;
    if c.router
        .speaker()
        .is_some_and(|(s, local)| !local && &s == sid)
    {
        c.router.set_remote_speaker(None);
    }
    broadcast(
        st,
        ch,
        None,
        Notification::FloorIdle {
            channel: ch.clone(),
        },
    );
}

/// Points the channel's relay at every live node with members in it, once each.
pub(super) fn refresh_targets(st: &HubState, ch: &ChannelId) {
    let Some(c) = st.channels.get(ch) else {
        return;
    };
    let me = st.cluster.as_ref().map(|c| c.node_id());
    let mut targets: Vec<std::net::SocketAddr> = c
        .remote
        .values()
        .filter(|r| Some(r.node.as_str()) != me)
        .filter_map(|r| st.live.get(&r.node).copied())
        .collect();
    targets.sort();
    targets.dedup();
    c.router.set_relay_targets(targets);
}
