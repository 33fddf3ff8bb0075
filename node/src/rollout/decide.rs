//! The driver's step function, pure: given the plan, the progress so far, the time and
//! (once an interval has passed) the two versions' figures over it, what the rollout's
//! next progress is. Gates: the new version must have served `min_requests` (else the step
//! holds and a new interval starts), fail no more often than `max_error_rate` and answer
//! within `max_p99_ms` at p99 — unless the old version did as badly over the same interval
//! (then it is not the new version's fault). The first failed gate rolls back.

use super::plan::{Command, Plan};
use super::progress::{Decision, Progress, State};
use super::Figures;

/// What an interval's figures say.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every gate held.
    Pass,
    /// Too few requests to judge.
    Hold(String),
    /// A gate failed.
    Fail(String),
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Judges one interval.
pub fn judge(plan: &Plan, new: &Figures, old: &Figures) -> Verdict {
    if new.requests < plan.min_requests.max(1) {
        return Verdict::Hold(format!(
            "{} had {} requests in the interval, fewer than the {} needed",
            plan.to, new.requests, plan.min_requests
        ));
    }
    let old_seen = old.requests > 0;
    if new.error_rate > plan.max_error_rate && !(old_seen && old.error_rate >= new.error_rate) {
        return Verdict::Fail(format!(
            "error rate of {} is {} ({} of {}), above the gate {}{}",
            plan.to,
            pct(new.error_rate),
            new.errors,
            new.requests,
            pct(plan.max_error_rate),
            if old_seen {
                format!(" ({} had {})", plan.from, pct(old.error_rate))
            } else {
                String::new()
            }
        ));
    }
    if let Some(max) = plan.max_p99_ms {
        if new.p99_ms > max && !(old_seen && old.p99_ms >= new.p99_ms) {
            return Verdict::Fail(format!(
                "p99 of {} is {} ms, above the gate {} ms{}",
                plan.to,
                new.p99_ms,
                max,
                if old_seen {
                    format!(" ({} had {} ms)", plan.from, old.p99_ms)
                } else {
                    String::new()
                }
            ));
        }
    }
    Verdict::Pass
}

fn decision(node: &str, now_ms: u64, action: &str, weight: u32, reason: String) -> Decision {
    Decision {
        at_ms: now_ms,
        node: node.to_owned(),
        action: action.to_owned(),
        weight,
        reason,
        new: None,
        old: None,
    }
}

/// The next progress of `plan` from `cur` (None: nothing to write). `judged` is the
/// new and old versions' figures over an interval the caller measured, given only once
/// a whole interval has passed since the current step started.
pub fn next(
    plan: &Plan,
    cur: Option<&Progress>,
    now_ms: u64,
    node: &str,
    judged: Option<(Figures, Figures)>,
) -> Option<Progress> {
    let cur = cur.filter(|p| p.check_against(plan).is_ok());
    let Some(cur) = cur else {
        // Start: the first step (or straight to the end for a one-step plan).
        let weight = plan.steps[0];
        let state = match plan.command {
            Command::Promote => {
                return Some(final_progress(plan, None, now_ms, node, State::Promoted))
            }
            Command::Abort => {
                return Some(final_progress(plan, None, now_ms, node, State::Aborted))
            }
            Command::Pause => State::Paused,
            Command::Run if weight == 100 => State::Promoted,
            Command::Run => State::Progressing,
        };
        let mut p = Progress {
            plan: plan.id.clone(),
            seq: 0,
            state,
            weight,
            step: 0,
            step_started_ms: now_ms,
            history: Vec::new(),
        };
        p.push(decision(
            node,
            now_ms,
            "start",
            weight,
            format!("{} → {} in steps {:?}", plan.from, plan.to, plan.steps),
        ));
        return Some(p);
    };
    if cur.state.is_final() {
        return None;
    }
    match (plan.command, cur.state) {
        (Command::Promote, _) => {
            return Some(final_progress(
                plan,
                Some(cur),
                now_ms,
                node,
                State::Promoted,
            ))
        }
        (Command::Abort, _) => {
            return Some(final_progress(
                plan,
                Some(cur),
                now_ms,
                node,
                State::Aborted,
            ))
        }
        (Command::Pause, State::Progressing) => {
            let mut p = cur.clone();
            p.state = State::Paused;
            p.push(decision(
                node,
                now_ms,
                "pause",
                p.weight,
                "paused by an operator".into(),
            ));
            return Some(p);
        }
        (Command::Pause, _) => return None,
        (Command::Run, State::Paused) => {
            let mut p = cur.clone();
            p.state = State::Progressing;
            p.step_started_ms = now_ms;
            p.push(decision(
                node,
                now_ms,
                "resume",
                p.weight,
                "resumed by an operator".into(),
            ));
            return Some(p);
        }
        (Command::Run, _) => {}
    }
    let (new, old) = judged?;
    let mut p = cur.clone();
    p.step_started_ms = now_ms;
    let mut d = match judge(plan, &new, &old) {
        Verdict::Hold(reason) => {
            // One line for a run of holds at a step: the latest figures replace the last.
            if p.history
                .last()
                .is_some_and(|d| d.action == "hold" && d.weight == p.weight)
            {
                p.history.pop();
            }
            decision(node, now_ms, "hold", p.weight, reason)
        }
        Verdict::Fail(reason) => {
            p.state = State::RolledBack;
            p.weight = 0;
            decision(node, now_ms, "rollback", 0, reason)
        }
        Verdict::Pass => {
            p.step += 1;
            p.weight = plan.steps[p.step];
            let last = p.weight == 100;
            if last {
                p.state = State::Promoted;
            }
            decision(
                node,
                now_ms,
                if last { "promote" } else { "advance" },
                p.weight,
                format!(
                    "{}: {} requests, {} failed, p99 {} ms; gates held",
                    plan.to,
                    new.requests,
                    pct(new.error_rate),
                    new.p99_ms
                ),
            )
        }
    };
    d.new = Some(new);
    d.old = Some(old);
    p.push(d);
    Some(p)
}

fn final_progress(
    plan: &Plan,
    cur: Option<&Progress>,
    now_ms: u64,
    node: &str,
    state: State,
) -> Progress {
    let (weight, step, action, reason) = match state {
        State::Promoted => (
            100,
            plan.steps.len() - 1,
            "promote",
            "promoted by an operator",
        ),
        _ => (
            0,
            cur.map_or(0, |c| c.step),
            "abort",
            "aborted by an operator",
        ),
    };
    let mut p = cur.cloned().unwrap_or(Progress {
        plan: plan.id.clone(),
        seq: 0,
        state,
        weight,
        step,
        step_started_ms: now_ms,
        history: Vec::new(),
    });
    p.state = state;
    p.weight = weight;
    p.step = step;
    p.push(decision(node, now_ms, action, weight, reason.into()));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        serde_json::from_value(serde_json::json!({
            "id": "ab", "from": "v1", "to": "v2", "steps": [10, 50, 100], "interval_ms": 5000,
            "max_error_rate": 0.01, "max_p99_ms": 100.0, "min_requests": 20, "started_ms": 1
        }))
        .expect("a plan")
    }

    fn figs(requests: u64, errors: u64, p99_ms: f64) -> Figures {
        Figures {
            requests,
            errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p50_ms: 1.0,
            p99_ms,
        }
    }

    #[test]
    fn a_healthy_rollout_starts_advances_and_is_promoted() {
        let plan = plan();
        let p = next(&plan, None, 1000, "n1", None).expect("started");
        assert_eq!((p.state, p.weight, p.step), (State::Progressing, 10, 0));
        p.check_against(&plan).expect("a progress the plan allows");
        assert_eq!(
            next(&plan, Some(&p), 2000, "n1", None),
            None,
            "no figures yet: wait"
        );
        let p = next(
            &plan,
            Some(&p),
            6000,
            "n1",
            Some((figs(30, 0, 2.0), figs(300, 0, 2.0))),
        )
        .expect("advanced");
        assert_eq!((p.state, p.weight, p.step), (State::Progressing, 50, 1));
        let p = next(
            &plan,
            Some(&p),
            11000,
            "n1",
            Some((figs(300, 1, 2.0), figs(300, 0, 2.0))),
        )
        .expect("promoted");
        assert_eq!((p.state, p.weight), (State::Promoted, 100));
        assert_eq!(
            p.history
                .iter()
                .map(|d| d.action.as_str())
                .collect::<Vec<_>>(),
            ["start", "advance", "promote"]
        );
        assert_eq!(
            next(
                &plan,
                Some(&p),
                20000,
                "n1",
                Some((figs(1, 1, 1.0), figs(1, 0, 1.0)))
            ),
            None,
            "final"
        );
    }

    #[test]
    fn failures_and_slowness_roll_back_with_the_figures() {
        let plan = plan();
        let p = next(&plan, None, 0, "n1", None).expect("started");
        let bad = next(
            &plan,
            Some(&p),
            5000,
            "n1",
            Some((figs(100, 20, 2.0), figs(900, 0, 2.0))),
        )
        .expect("decided");
        assert_eq!((bad.state, bad.weight), (State::RolledBack, 0));
        let last = bad.history.last().expect("a decision");
        assert!(
            last.reason.contains("error rate of v2 is 20.0%")
                && last.reason.contains("v1 had 0.0%"),
            "{}",
            last.reason
        );
        assert_eq!(last.new.as_ref().map(|f| f.errors), Some(20));
        let slow = next(
            &plan,
            Some(&p),
            5000,
            "n1",
            Some((figs(100, 0, 512.0), figs(900, 0, 2.0))),
        )
        .expect("decided");
        assert_eq!(slow.state, State::RolledBack);
        assert!(slow
            .history
            .last()
            .is_some_and(|d| d.reason.contains("p99 of v2 is 512 ms")));
        // Not the new version's fault: the old one failed as often.
        let both = next(
            &plan,
            Some(&p),
            5000,
            "n1",
            Some((figs(100, 20, 2.0), figs(900, 300, 2.0))),
        )
        .expect("decided");
        assert_eq!(both.weight, 50);
    }

    #[test]
    fn too_few_requests_hold_the_step_in_one_history_line() {
        let plan = plan();
        let p = next(&plan, None, 0, "n1", None).expect("started");
        let h1 = next(
            &plan,
            Some(&p),
            5000,
            "n1",
            Some((figs(3, 0, 1.0), figs(30, 0, 1.0))),
        )
        .expect("held");
        assert_eq!(
            (h1.state, h1.weight, h1.step_started_ms),
            (State::Progressing, 10, 5000)
        );
        let h2 = next(
            &plan,
            Some(&h1),
            10000,
            "n1",
            Some((figs(0, 0, 0.0), figs(0, 0, 0.0))),
        )
        .expect("held");
        assert_eq!(h2.history.len(), 2, "start + one hold");
        let go = next(
            &plan,
            Some(&h2),
            15000,
            "n1",
            Some((figs(25, 0, 1.0), figs(200, 0, 1.0))),
        )
        .expect("advanced");
        assert_eq!(go.weight, 50);
    }

    #[test]
    fn operator_commands_pause_resume_promote_and_abort() {
        let mut plan = plan();
        let p = next(&plan, None, 0, "n1", None).expect("started");
        plan.command = Command::Pause;
        let paused = next(&plan, Some(&p), 100, "n1", None).expect("paused");
        assert_eq!((paused.state, paused.weight), (State::Paused, 10));
        assert_eq!(
            next(
                &plan,
                Some(&paused),
                9000,
                "n1",
                Some((figs(99, 0, 1.0), figs(99, 0, 1.0)))
            ),
            None
        );
        plan.command = Command::Run;
        let resumed = next(&plan, Some(&paused), 200, "n1", None).expect("resumed");
        assert_eq!(
            (resumed.state, resumed.step_started_ms),
            (State::Progressing, 200)
        );
        plan.command = Command::Promote;
        let done = next(&plan, Some(&resumed), 300, "n1", None).expect("promoted");
        assert_eq!(
            (done.state, done.weight, done.step),
            (State::Promoted, 100, 2)
        );
        done.check_against(&plan).expect("allowed");
        plan.command = Command::Abort;
        let aborted = next(&plan, Some(&resumed), 300, "n1", None).expect("aborted");
        assert_eq!((aborted.state, aborted.weight), (State::Aborted, 0));
        aborted.check_against(&plan).expect("allowed");
    }
}
