//! Round-robin admission across agents: each agent has its own FIFO, and the agents with work take
//! turns, so an agent that floods the queue delays only its own requests.
use std::collections::VecDeque;

pub struct FairQueue<T> {
    /// Agents with waiting items, in turn order; each agent's items in arrival order.
    agents: VecDeque<(String, VecDeque<T>)>,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue { agents: VecDeque::new(), len: 0 }
    }
}

impl<T> FairQueue<T> {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends to `agent`'s queue; a new agent takes its turn after those already waiting.
    pub fn push(&mut self, agent: &str, item: T) {
        self.len += 1;
        match self.agents.iter_mut().find(|(a, _)| a == agent) {
            Some((_, items)) => items.push_back(item),
            None => self.agents.push_back((agent.to_string(), VecDeque::from([item]))),
        }
    }

    /// Takes the oldest item of the agent whose turn it is, if `fits` accepts it; that agent then
    /// goes to the back. When it does not fit, nothing is taken (the turn is kept, so a large
    /// request is not starved by smaller ones behind it).
    pub fn pop_if(&mut self, fits: impl FnOnce(&T) -> bool) -> Option<T> {
        let (agent, mut items) = self.agents.pop_front()?;
        if !items.front().is_some_and(fits) {
            if !items.is_empty() {
                self.agents.push_front((agent, items));
            }
            return None;
        }
        let item = items.pop_front()?;
        self.len -= 1;
        if !items.is_empty() {
            self.agents.push_back((agent, items));
        }
        Some(item)
    }

    /// Removes every item for which `remove` returns true (it may consume side effects, such as
    /// telling the caller why); the order of the rest is kept.
    pub fn remove_where(&mut self, mut remove: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut removed = Vec::new();
        for (_, items) in self.agents.iter_mut() {
            let mut kept = VecDeque::with_capacity(items.len());
            for item in items.drain(..) {
                if remove(&item) {
                    removed.push(item);
                } else {
                    kept.push_back(item);
                }
            }
            *items = kept;
        }
        self.agents.retain(|(_, items)| !items.is_empty());
        self.len -= removed.len();
        removed
    }

    /// Empties the queue.
    pub fn drain_all(&mut self) -> Vec<T> {
        self.len = 0;
        self.agents.drain(..).flat_map(|(_, items)| items).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::FairQueue;

    #[test]
    fn agents_take_turns() {
        let mut q = FairQueue::default();
        for i in 0..4 {
            q.push("flood", format!("f{i}"));
        }
        q.push("b", "b0".to_string());
        q.push("c", "c0".to_string());
        q.push("b", "b1".to_string());
        let order: Vec<String> = std::iter::from_fn(|| q.pop_if(|_| true)).collect();
        assert_eq!(order, ["f0", "b0", "c0", "f1", "b1", "f2", "f3"]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_request_that_does_not_fit_keeps_its_turn() {
        let mut q = FairQueue::default();
        q.push("a", 10);
        q.push("b", 1);
        assert_eq!(q.pop_if(|&n| n < 5), None);
        assert_eq!(q.pop_if(|_| true), Some(10));
        assert_eq!(q.pop_if(|_| true), Some(1));
        assert_eq!(q.pop_if(|_| true), None);
    }

    #[test]
    fn removal_keeps_order_and_count() {
        let mut q = FairQueue::default();
        for i in 0..6 {
            q.push(if i % 2 == 0 { "a" } else { "b" }, i);
        }
        assert_eq!(q.remove_where(|&i| i == 0 || i == 3), vec![0, 3]);
        assert_eq!(q.len(), 4);
        let order: Vec<i32> = std::iter::from_fn(|| q.pop_if(|_| true)).collect();
        assert_eq!(order, [2, 1, 4, 5]);
    }
}
