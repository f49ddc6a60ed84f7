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
