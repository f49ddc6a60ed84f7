//! Start-up: listeners up, an initial peer answered, the join lookup done.
use super::*;

impl EventLoop {
    // ---- start-up -------------------------------------------------------

    pub(super) fn check_ready(&mut self) {
        let Some(s) = &mut self.startup else { return };
        if !s.listeners.is_empty() {
            return;
        }
        if !s.connected {
            if s.pending_initial.is_empty() {
                let tried = std::mem::take(&mut s.failed_initial);
                let timeout_s = s.timeout.as_secs_f64();
                self.finish_startup(Err(DhtError::NoInitialPeerAnswered { tried, timeout_s }));
            }
            return;
        }
        if s.needs_join {
            if s.awaiting_verdict {
                return;
            }
            s.needs_join = false;
            let local = self.local;
            let id = self.swarm.behaviour_mut().kad.get_closest_peers(local);
            if let Some(s) = &mut self.startup {
                s.join = Some(id);
            }
            return;
        }
        if s.join.is_none() {
            self.finish_startup(Ok(()));
        }
    }

    /// The routing table is empty after start-up: every peer left, or none
    /// was admitted when the node joined (its initial peers were not staked
    /// yet, say). Go back to the initial peers: dial those not connected,
    /// ask the gate again about those that are (an admitted one enters the
    /// table once the answer comes), and join again as soon as one does.
    /// Runs once a refresh period while the table stays empty.
    pub(super) fn rejoin(&mut self) {
        if self.initial.is_empty() {
            return;
        }
        if !self.rejoining {
            tracing::info!(
                initial_peers = self.initial.len(),
                "routing table empty: asking the initial peers again"
            );
        }
        self.rejoining = true;
        for (peer, base, full) in self.initial.clone() {
            if !self.swarm.is_connected(&peer) {
                // Identify on the new connection brings it in (admitted or not).
                if let Err(e) = self.swarm.dial(full.clone()) {
                    tracing::debug!(%full, "cannot dial initial peer: {e}");
                }
                continue;
            }
            match self.admission.decide(peer) {
                Decision::Admit => {
                    self.swarm.behaviour_mut().kad.add_address(&peer, base);
                }
                // A stale or missing verdict is being asked again; the answer
                // adds what waits here.
                Decision::Unknown | Decision::Refuse => {
                    let waiting = self.awaiting.entry(peer).or_default();
                    if !waiting.contains(&base) {
                        waiting.push(base);
                    }
                }
            }
        }
    }

    pub(super) fn startup_timed_out(&mut self) {
        let Some(s) = &mut self.startup else { return };
        if !s.listeners.is_empty() {
            self.finish_startup(Err(DhtError::Transport(
                "listeners did not start in time".into(),
            )));
        } else if !s.connected {
            let mut tried = std::mem::take(&mut s.failed_initial);
            tried.extend(
                s.pending_initial
                    .values()
                    .map(|a| (a.clone(), "no answer".to_string())),
            );
            let timeout_s = s.timeout.as_secs_f64();
            self.finish_startup(Err(DhtError::NoInitialPeerAnswered { tried, timeout_s }));
        } else {
            tracing::warn!(
                "the join lookup did not finish in time; continuing with the peers found so far"
            );
            self.finish_startup(Ok(()));
        }
    }

    pub(super) fn finish_startup(&mut self, result: Result<(), DhtError>) {
        if let Some(s) = self.startup.take() {
            if result.is_ok() {
                let rt = self.routing_table().len();
                tracing::info!(peer_id = %self.local, routing_table = rt, "DHT node ready");
            }
            let _ = s.ready.send(result);
        }
    }
}
