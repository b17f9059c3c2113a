//! The worker's heartbeat: register, learn who is alive, extend this node's records and
//! leases, and read what the other nodes hold for the hub to reconcile with.

use super::*;

impl Worker {
    pub(super) async fn beat(&mut self) {
        let Some(c) = self.cluster.upgrade() else {
            return;
        };
        let Some(hub) = c.hub() else {
            return;
        };
        if c.leaving.load(Ordering::Relaxed) {
            return;
        }
        let was_up = c.is_up();
        let snapshot = hub.cluster_snapshot();
        let started = Instant::now();
        let me = c.node_info(snapshot.sessions.len());
        let reg = redis::pipe()
            .cmd("SET")
            .arg(node_key(&me.id))
            .arg(serde_json::to_string(&me).expect("records serialize"))
            .arg("PX")
            .arg(Cluster::ms(NODE_TTL))
            .ignore()
            .cmd("SADD")
            .arg(NODES)
            .arg(&me.id)
            .ignore()
            .query_async::<()>(&mut self.conn)
            .await;
        if let Err(e) = reg {
            self.failed("heartbeat", &e);
            return;
        }
        metrics::histogram!("roger_redis_rtt_seconds").record(started.elapsed().as_secs_f64());
        if !was_up {
            c.up.store(true, Ordering::Relaxed);
            metrics::gauge!("roger_redis_up").set(1.0);
            if self.last_error.take().is_some() {
                tracing::info!("redis reachable again: writing back this node's state");
            }
        }
        if let Err(e) = self.beat_inner(&c, &hub, snapshot, !was_up).await {
            self.failed("heartbeat", &e);
        }
    }

    async fn beat_inner(
        &mut self,
        c: &Arc<Cluster>,
        hub: &Arc<Hub>,
        snapshot: Snapshot,
        write_back: bool,
    ) -> redis::RedisResult<()> {
        let me = c.settings.node_id.clone();
        // Who is alive.
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(NODES)
            .query_async(&mut self.conn)
            .await?;
        let keys: Vec<String> = ids.iter().map(|i| node_key(i)).collect();
        let infos: Vec<Option<String>> = if keys.is_empty() {
            vec![]
        } else {
            redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut self.conn)
                .await?
        };
        let mut live = Vec::new();
        let now = Instant::now();
        for (id, info) in ids.iter().zip(infos) {
            match info.and_then(|t| serde_json::from_str::<NodeInfo>(&t).ok()) {
                Some(n) => {
                    self.missing_since.remove(id);
                    live.push(n);
                }
                None => {
                    self.missing_since.entry(id.clone()).or_insert(now);
                }
            }
        }
        // Forgotten once nothing of theirs can be left.
        let forget: Vec<String> = self
            .missing_since
            .iter()
            .filter(|(_, t)| now.duration_since(**t) > c.settings.session_grace * 2)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &forget {
            self.missing_since.remove(id);
            redis::cmd("SREM")
                .arg(NODES)
                .arg(id)
                .query_async::<()>(&mut self.conn)
                .await?;
        }
        metrics::gauge!("roger_cluster_nodes").set(live.len() as f64);
        *crate::sync::lock(&c.live) = live.clone();

        // This node's records: extended (or written back after an outage), and its
        // members written every time (an entry a stale copy elsewhere overwrote, or a
        // restart lost, comes back within a heartbeat).
        let ttl = Cluster::ms(c.settings.session_grace);
        if !snapshot.sessions.is_empty() {
            let mut p = redis::pipe();
            for (token, rec) in &snapshot.sessions {
                if write_back {
                    p.cmd("SET")
                        .arg(resume_key(token))
                        .arg(serde_json::to_string(rec).expect("records serialize"))
                        .arg("PX")
                        .arg(ttl);
                } else {
                    p.cmd("PEXPIRE").arg(resume_key(token)).arg(ttl);
                }
            }
            let kept: Vec<redis::Value> = p.query_async(&mut self.conn).await?;
            if !write_back {
                self.find_moved(hub, &snapshot, &kept);
            }
        }
        if !snapshot.members.is_empty() {
            let mut p = redis::pipe();
            for (ch, session, member) in &snapshot.members {
                let rec = MemberRecord {
                    member: member.clone(),
                    node: me.clone(),
                    epoch: c.epoch,
                };
                p.cmd("HSET")
                    .arg(members_key(ch))
                    .arg(session.as_str())
                    .arg(serde_json::to_string(&rec).expect("records serialize"))
                    .ignore();
            }
            p.query_async::<()>(&mut self.conn).await?;
        }
        for (ch, floor) in &snapshot.floors {
            let kept: i64 = self
                .refresh
                .key(floor_key(ch))
                .arg(serde_json::to_string(floor).expect("records serialize"))
                .arg(Cluster::ms(c.settings.floor_grace))
                .arg(floor.session.as_str())
                .arg(&me)
                .arg(c.epoch.to_string())
                .invoke_async(&mut self.conn)
                .await?;
            if kept == 0 {
                tracing::warn!(channel = %ch, "another node holds this floor's lease: revoking ours");
                hub.lost_lease(ch, &floor.session);
            }
        }

        // What the others hold.
        let channels = hub.channel_ids();
        let mut p = redis::pipe();
        for ch in &channels {
            p.cmd("HGETALL").arg(members_key(ch));
            p.cmd("GET").arg(floor_key(ch));
        }
        let raw: Vec<redis::Value> = if channels.is_empty() {
            vec![]
        } else {
            p.query_async(&mut self.conn).await?
        };
        let live_ids: HashSet<&str> = live.iter().map(|n| n.id.as_str()).collect();
        let mut view = View {
            live: live.iter().map(|n| (n.id.clone(), n.relay)).collect(),
            ..View::default()
        };
        let mine: HashSet<(ChannelId, SessionId)> = snapshot
            .members
            .iter()
            .map(|(ch, s, _)| (ch.clone(), s.clone()))
            .collect();
        let mut stale: Vec<(ChannelId, SessionId, String)> = Vec::new();
        let mut orphans_seen = HashSet::new();
        for (i, ch) in channels.iter().enumerate() {
            let members: HashMap<String, String> =
                redis::from_redis_value_ref(&raw[2 * i]).unwrap_or_default();
            let floor: Option<String> =
                redis::from_redis_value_ref(&raw[2 * i + 1]).unwrap_or(None);
            let mut remote = HashMap::new();
            for (sid, text) in members {
                let Ok(rec) = serde_json::from_str::<MemberRecord>(&text) else {
                    continue;
                };
                let sid = SessionId(sid);
                let mine_now = rec.node == me && rec.epoch == c.epoch;
                let gone = if mine_now {
                    // Ours but no longer here (left while Redis was away).
                    !mine.contains(&(ch.clone(), sid.clone()))
                } else {
                    // Another node's, or an earlier run of this one: kept while its
                    // node lives, then for one session grace (it may resume elsewhere).
                    let owner = if rec.node == me {
                        format!("{}#{}", rec.node, rec.epoch)
                    } else {
                        rec.node.clone()
                    };
                    let alive = rec.node != me && live_ids.contains(rec.node.as_str());
                    if !alive {
                        orphans_seen.insert(owner.clone());
                        self.missing_since.entry(owner.clone()).or_insert(now);
                    }
                    !alive
                        && self
                            .missing_since
                            .get(&owner)
                            .is_none_or(|t| now.duration_since(*t) > c.settings.session_grace)
                };
                if gone {
                    stale.push((ch.clone(), sid, text));
                } else if !mine_now {
                    remote.insert(sid, rec);
                }
            }
            view.members.insert(ch.clone(), remote);
            if let Some(f) = floor.and_then(|t| serde_json::from_str::<FloorRecord>(&t).ok()) {
                if f.node != me || f.epoch != c.epoch {
                    view.floors.insert(ch.clone(), f);
                    self.orphan_leases.remove(ch);
                } else if !snapshot
                    .floors
                    .iter()
                    .any(|(c2, f2)| c2 == ch && f2.session == f.session)
                {
                    // A lease of this run the hub no longer has (its release was lost):
                    // ended at the second heartbeat that finds it so (the first may see
                    // a grant on its way to the hub).
                    let n = self.orphan_leases.entry(ch.clone()).or_insert(0);
                    *n += 1;
                    if *n >= 2 {
                        self.orphan_leases.remove(ch);
                        self.release
                            .key(floor_key(ch))
                            .arg(f.session.as_str())
                            .arg(&me)
                            .arg(c.epoch.to_string())
                            .invoke_async::<i64>(&mut self.conn)
                            .await?;
                    }
                } else {
                    self.orphan_leases.remove(ch);
                }
            } else {
                self.orphan_leases.remove(ch);
            }
        }
        // Earlier runs of this node whose entries are all gone are forgotten.
        self.missing_since
            .retain(|k, _| !k.contains('#') || orphans_seen.contains(k));
        for (ch, sid, text) in stale {
            // Only if the entry is still what was read: its session may have written a
            // new one from the node it moved to.
            self.hdel_if
                .key(members_key(&ch))
                .arg(sid.as_str())
                .arg(&text)
                .invoke_async::<i64>(&mut self.conn)
                .await?;
        }
        hub.reconcile(view);
        Ok(())
    }

    /// Sessions whose record `PEXPIRE` found gone twice in a row: another node took them
    /// (their `Moved` on the bus was lost). The hub drops its copy.
    fn find_moved(&mut self, hub: &Arc<Hub>, snapshot: &Snapshot, kept: &[redis::Value]) {
        let mut seen = HashMap::new();
        for ((_, rec), v) in snapshot.sessions.iter().zip(kept) {
            let gone = matches!(v, redis::Value::Int(0));
            if gone {
                let n = self.unclaimed.get(&rec.session).copied().unwrap_or(0) + 1;
                if n >= 2 {
                    tracing::info!(session = %rec.session, "its resume record is gone: the session went to another node");
                    hub.gone_elsewhere(&rec.session);
                } else {
                    seen.insert(rec.session.clone(), n);
                }
            }
        }
        self.unclaimed = seen;
    }
}
