//! The goals a run is held to, and a closing table of which were met and by how much.

/// One number compared with its goal (both measured or derived in the same run).
pub struct Goal {
    what: String,
    value: f64,
    bound: f64,
    at_most: bool,
}

impl Goal {
    /// `value` should be ≤ `bound`.
    pub fn at_most(what: &str, value: f64, bound: f64) -> Self {
        Self {
            what: what.to_owned(),
            value,
            bound,
            at_most: true,
        }
    }

    /// `value` should be ≥ `bound`.
    pub fn at_least(what: &str, value: f64, bound: f64) -> Self {
        Self {
            what: what.to_owned(),
            value,
            bound,
            at_most: false,
        }
    }

    fn met(&self) -> bool {
        if self.at_most {
            self.value <= self.bound
        } else {
            self.value >= self.bound
        }
    }
}

/// Everything a run concluded, printed at the end.
#[derive(Default)]
pub struct Report {
    goals: Vec<Goal>,
    notes: Vec<String>,
}

impl Report {
    /// Records a goal.
    pub fn goal(&mut self, g: Goal) {
        self.goals.push(g);
    }

    /// Records a figure with no goal.
    pub fn note(&mut self, n: String) {
        self.notes.push(n);
    }

    /// Prints the goals table.
    pub fn print(&self) {
        if self.goals.is_empty() && self.notes.is_empty() {
            return;
        }
        println!("\ngoals (every ratio is against baselines measured in this run)\n");
        println!(
            "{:<62} {:>10} {:>12} {:>8}",
            "goal", "measured", "bound", ""
        );
        for g in &self.goals {
            let bound = format!("{} {:.3}", if g.at_most { "≤" } else { "≥" }, g.bound);
            let verdict = if g.met() { "met" } else { "MISSED" };
            println!(
                "{:<62} {:>10.3} {:>12} {:>8}",
                g.what, g.value, bound, verdict
            );
        }
        for n in &self.notes {
            println!("{n}");
        }
    }
}
