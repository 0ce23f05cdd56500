//! Transfer and conference (SPEC CC4): REFER (RFC 3515) with its NOTIFY progress, and the
//! ad hoc conference at the call manager's bridge.

use super::*;

impl Calls {
    /// Tells the transferor of call `i` (made for its REFER) how the call went: a NOTIFY with
    /// the final status as `message/sipfrag` (RFC 3515 §2.4.5), ending the implicit
    /// subscription.
    pub(super) fn notify_referrer(&mut self, now: Time, ctx: &Ctx, i: usize, code: u16) {
        let Some(old) = self.calls[i].referred_by.take() else { return };
        let Some(j) = self.calls.iter().position(|c| c.id == old && c.state != CallState::Ended)
        else {
            return;
        };
        let mut n = self.in_dialog(ctx, j, "NOTIFY");
        n.push("Event", "refer");
        n.push("Subscription-State", "terminated;reason=noresource");
        n.push("Content-Type", "message/sipfrag;version=2.0");
        n.body = format!("SIP/2.0 {code} {}\r\n", sip::reason(code)).into_bytes();
        self.request(now, n);
    }

    /// Sends call `i`'s peer a REFER to `to` (RFC 3515); its NOTIFYs say how it went.
    pub(super) fn refer(&mut self, now: Time, ctx: &Ctx, i: usize, to: &str) {
        let mut m = self.in_dialog(ctx, i, "REFER");
        m.push("Refer-To", format!("<sip:{to}@{}>", ctx.registrar));
        m.push("Referred-By", format!("<sip:{}@{}>", ctx.line, ctx.registrar));
        self.calls[i].referring = Some(to.to_owned());
        self.request(now, m);
    }

    /// Ad hoc conference under CUCM: a call to the conference bridge, then each other call is
    /// REFERred to the focus the bridge names (RFC 4579 §5.5) and, once its party is in, ended.
    pub(super) fn conference(&mut self, now: Time, ctx: &Ctx) {
        let busy = self.calls.iter().any(|c| {
            c.state != CallState::Ended && (c.referring.is_some() || !c.conference.is_empty())
        });
        if busy {
            return self.refuse("conference", "a transfer or conference is already under way");
        }
        let parties: Vec<u32> = self
            .calls
            .iter()
            .filter(|c| matches!(c.state, CallState::Connected | CallState::Held))
            .filter(|c| c.peer != ADHOC && !c.peer.starts_with("conf-"))
            .map(|c| c.id)
            .collect();
        if parties.len() < 2 {
            return self.refuse("conference", "a conference needs two calls");
        }
        self.place(now, ctx, ADHOC, None);
        let i = self.calls.len() - 1;
        self.calls[i].conference = parties;
    }

    /// The bridge answered the conference call `i` as `focus`: its parties are sent there.
    pub(super) fn bring_in(&mut self, now: Time, ctx: &Ctx, i: usize) {
        let parties = std::mem::take(&mut self.calls[i].conference);
        let focus = self.calls[i]
            .remote_target
            .split_once(':')
            .and_then(|(_, r)| r.split(['@', ';']).next())
            .filter(|u| u.starts_with("conf-") && sip::is_token(u))
            .map(str::to_owned);
        let Some(focus) = focus else {
            return self.refuse("conference", "the bridge named no conference");
        };
        let (id, _) = (self.calls[i].id, ());
        self.events.push(ClientEvent::CallState {
            id,
            state: "conference".into(),
            peer: focus.clone(),
        });
        for p in parties {
            let Some(j) = self.calls.iter().position(|c| {
                c.id == p && matches!(c.state, CallState::Connected | CallState::Held)
            }) else {
                continue;
            };
            self.refer(now, ctx, j, &focus);
            self.calls[j].to_conference = true;
            self.state_event(j, "conferencing");
        }
    }
}
