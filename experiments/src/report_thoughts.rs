//! The thought-communication section of `tcomm report`: for runs in thoughtcomm mode, what the
//! agents received (shared and private thoughts, prefix norms), how separable their states were,
//! and what thought communication cost in wall time.
use agents::results::ProblemResult;
use agents::thoughts::ThoughtRoundRecord;

/// Totals over a run's `thoughts` records.
#[derive(Default)]
struct ThoughtTotals {
    compositions: usize,
    agent_records: usize,
    shared: f64,
    private: f64,
    prefix_norm: f64,
    /// Sums over the agent records that have a thought norm (older records do not), and of its
    /// expected size on training-like states, over the same records.
    thought_norm: f64,
    expected_thought_norm: f64,
    thought_norm_count: usize,
    /// Records written before the runtime reported the expectation: sqrt(routed thoughts)
    /// stands in for it there, which ignores the agreement weights.
    unweighted_expectations: usize,
    cosine_sum: f64,
    cosine_count: usize,
    compose_s: f64,
    encode_route_inject_s: f64,
    wall_s: f64,
    /// Responses of recorded rounds fed back for their states, and how many of them tokenized
    /// anew to another token count.
    replayed: usize,
    retokenized: usize,
}

fn totals(results: &[ProblemResult]) -> Option<ThoughtTotals> {
    let mut t = ThoughtTotals::default();
    let mut any = false;
    for r in results {
        let Some(thoughts) = &r.thoughts else { continue };
        any = true;
        t.wall_s += r.wall_time_s;
        let rounds: Vec<ThoughtRoundRecord> = serde_json::from_value(thoughts["rounds"].clone()).unwrap_or_default();
        for round in rounds {
            t.compositions += 1;
            t.compose_s += round.compose_s;
            t.encode_route_inject_s += round.encode_s + round.route_s + round.inject_s;
            if let Some(k) = round.replayed_retokenized {
                t.replayed += round.agents.len();
                t.retokenized += k;
            }
            if let Some(c) = round.state_cosine {
                t.cosine_sum += c;
                t.cosine_count += 1;
            }
            for a in round.agents {
                t.agent_records += 1;
                t.shared += f64::from(a.shared);
                t.private += f64::from(a.private);
                t.prefix_norm += a.prefix_norm;
                if let Some(norm) = a.thought_norm {
                    t.thought_norm += norm;
                    t.expected_thought_norm += a.expected_thought_norm.unwrap_or_else(|| {
                        t.unweighted_expectations += 1;
                        f64::from(a.shared + a.private).sqrt()
                    });
                    t.thought_norm_count += 1;
                }
            }
        }
    }
    any.then_some(t)
}

/// The markdown section, or None when no run used thought communication.
pub fn section(runs: &[(&str, &[ProblemResult])]) -> Option<String> {
    let rows: Vec<(&str, ThoughtTotals)> = runs.iter().filter_map(|(name, results)| totals(results).map(|t| (*name, t))).collect();
    if rows.is_empty() {
        return None;
    }
    let mut md = String::from(
        "\nThought communication (per agent and composition: routed thoughts and prefix norm; state cosine: mean pairwise \
         cosine of the agents' states, near 1 = hard to tell apart; thought norm: the routed thoughts' norm in the adapter's \
         standardized units, against its size on states like the training ones, sqrt(sum of the routed thoughts' squared \
         agreement weights): far from it, the states lie outside what the pipeline was trained on; overhead: \
         ComposeThoughts calls as a share of the wall time):\n\n\
         | run | compositions | shared / agent | private / agent | prefix norm | thought norm (expected) | state cosine | compose ms (server part) | overhead |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut notes = String::new();
    for (name, t) in rows {
        if t.replayed > 0 {
            notes.push_str(&format!(
                "\n{name}: its first round was recorded in another run and fed back for the states; {} of {} responses \
                 tokenized anew to another token count than they were generated with (their states are of the new tokenization).\n",
                t.retokenized, t.replayed
            ));
        }
        if t.unweighted_expectations > 0 {
            notes.push_str(&format!(
                "\n{name}: {} of {} agent records predate the recorded expectation; sqrt(routed thoughts) stands in for it \
                 there (it ignores the agreement weights, so it overstates the expected norm when they are below 1).\n",
                t.unweighted_expectations, t.thought_norm_count
            ));
        }
        let per_agent = |x: f64| x / t.agent_records.max(1) as f64;
        let cosine = if t.cosine_count > 0 { format!("{:.3}", t.cosine_sum / t.cosine_count as f64) } else { "-".into() };
        let per_call = |s: f64| 1000.0 * s / t.compositions.max(1) as f64;
        let thought_norm = if t.thought_norm_count > 0 {
            let n = t.thought_norm_count as f64;
            format!("{:.1} ({:.1})", t.thought_norm / n, t.expected_thought_norm / n)
        } else {
            "-".into()
        };
        md.push_str(&format!(
            "| {name} | {} | {:.1} | {:.1} | {:.2} | {thought_norm} | {cosine} | {:.1} ({:.1}) | {:.2}% |\n",
            t.compositions,
            per_agent(t.shared),
            per_agent(t.private),
            per_agent(t.prefix_norm),
            per_call(t.compose_s),
            per_call(t.encode_route_inject_s),
            100.0 * t.compose_s / t.wall_s.max(1e-9),
        ));
    }
    md.push_str(&notes);
    Some(md)
}
