//! The debate prompts of Du et al. 2023 ("Improving Factuality and Reasoning in Language Models
//! through Multiagent Debate", their `gsm/gen_gsm.py`), with the answer format of each dataset,
//! and the default agent roles.

/// How a dataset asks for the final answer.
pub fn answer_instruction(math: bool) -> &'static str {
    if math {
        "Your final answer should be in the form \\boxed{answer}, at the end of your response."
    } else {
        "Your final answer should be a single numerical number, in the form \\boxed{answer}, at the end of your response."
    }
}

/// Round 1: every agent answers alone.
pub fn first_round(question: &str, math: bool) -> String {
    format!("Can you solve the following math problem? {question} Explain your reasoning. {}", answer_instruction(math))
}

/// Later rounds: the other agents' latest responses, then the question again.
pub fn later_round(question: &str, others: &[&str], math: bool) -> String {
    let mut prompt = String::from("These are the solutions to the problem from other agents: ");
    for response in others {
        prompt.push_str(&format!("\n\n One agent solution: ```{response}```"));
    }
    prompt.push_str(&format!(
        "\n\n Using the solutions from other agents as additional information, can you provide your answer to the math problem? \n The original math problem is {question}. {}",
        answer_instruction(math)
    ));
    prompt
}

/// A later round without the other agents' texts (ThoughtComm with text hidden: the agent sees
/// only its own history and, through its prefix, the routed thoughts).
pub fn later_round_alone(question: &str, math: bool) -> String {
    format!(
        "Reconsider your solution to the math problem and give your answer again. \n The original math problem is {question}. {}",
        answer_instruction(math)
    )
}

/// Agent `agent`'s whole conversation before its turn in round `responses.len()` (Du et al. keep
/// every agent's history): the round prompts as user messages and its own earlier responses as
/// assistant messages; `responses[r][a]` is agent a's response in round r. `show_text = false`
/// leaves the other agents' responses out of later rounds (ThoughtComm with the prefix alone).
/// The system prompt (the agent's role) is the runtime's to add. The debate and the adapter
/// training both build prompts here, so that training sees exactly what the debate sent.
pub fn conversation(question: &str, math: bool, responses: &[Vec<String>], agent: usize, show_text: bool) -> Vec<(&'static str, String)> {
    let mut messages = Vec::with_capacity(2 * responses.len() + 1);
    for round in 0..=responses.len() {
        let content = if round == 0 {
            first_round(question, math)
        } else if !show_text {
            later_round_alone(question, math)
        } else {
            let previous = &responses[round - 1];
            let others: Vec<&str> = (0..previous.len()).filter(|&o| o != agent).map(|o| previous[o].as_str()).collect();
            later_round(question, &others, math)
        };
        messages.push(("user", content));
        if let Some(own) = responses.get(round).and_then(|r| r.get(agent)) {
            messages.push(("assistant", own.clone()));
        }
    }
    messages
}

/// Default roles (system prompts), cycled over agents: copies of one model with one prompt give
/// nearly identical hidden states, so agents differ by role unless told otherwise.
pub const DEFAULT_ROLES: &[&str] = &[
    "You are a careful math solver. Work through the problem step by step.",
    "You are a meticulous checker of calculations. Recompute every arithmetic step and point out any mistake.",
    "You are a critical reviewer. Question each assumption and look for a different way to solve the problem.",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_round_lists_every_other_solution_and_repeats_the_question() {
        let p = later_round("What is 2+2?", &["It is 4.", "It is 5."], false);
        assert_eq!(p.matches("One agent solution:").count(), 2);
        assert!(p.contains("```It is 5.```"));
        assert!(p.contains("The original math problem is What is 2+2?."));
        assert!(p.ends_with("in the form \\boxed{answer}, at the end of your response."));
    }

    #[test]
    fn conversations_alternate_round_prompts_and_own_responses() {
        let responses = vec![vec!["a0".to_string(), "b0".into(), "c0".into()]];
        let m = conversation("Q?", false, &responses, 1, true);
        let roles: Vec<&str> = m.iter().map(|(r, _)| *r).collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        assert_eq!(m[0].1, first_round("Q?", false));
        assert_eq!(m[1].1, "b0");
        assert_eq!(m[2].1, later_round("Q?", &["a0", "c0"], false));
        let alone = conversation("Q?", true, &responses, 2, false);
        assert_eq!(alone[2].1, later_round_alone("Q?", true));
        assert_eq!(conversation("Q?", false, &[], 0, true), vec![("user", first_round("Q?", false))]);
    }
}
