//! What the attentions' `auto` choices share (`attention_choice` at inference,
//! `train_attention_choice` in training): the kinds a process met, each with its timing and the
//! candidate chosen, kept in the products' file for later processes (`product_store`); whether a
//! device's kinds are timed at all; and the timing of a kind's candidates, as the products'
//! (`product_choice`: one launch each first, then rounds of growing batches of launches, each
//! candidate kept at its fastest).

use std::collections::HashMap;
use std::hash::Hash;

use burn::tensor::Device;

use super::product_choice::{self, ROUNDS};
use super::product_store::{Choice, Operands, Store, warn};

/// The kinds met so far (`K`: what makes two calls the same kind), in order with their timings
/// (`T`) and by kind with the candidate chosen (`C`), and where choices are kept.
pub(super) struct Choices<K, T, C> {
    list: Vec<T>,
    by_kind: HashMap<K, C>,
    store: Option<Store>,
    /// What is chosen, for the warning when the file cannot be written ("attention").
    what: &'static str,
}

impl<K: Hash + Eq, T: Choice, C: Copy> Choices<K, T, C> {
    /// None met yet, nothing kept; `what` names the choices in warnings.
    pub(super) fn new(what: &'static str) -> Self {
        Choices {
            list: Vec::new(),
            by_kind: HashMap::new(),
            store: None,
            what,
        }
    }

    /// Every kind timed or taken from the file so far, in the order first met.
    pub(super) fn list(&self) -> &[T] {
        &self.list
    }

    /// The candidate chosen for `kind`, if it was met.
    pub(super) fn chosen(&self, kind: &K) -> Option<C> {
        self.by_kind.get(kind).copied()
    }

    /// Keep the choices in `file` (its path and this build's identity); `None`: keep nothing.
    pub(super) fn keep_in(&mut self, file: Option<(std::path::PathBuf, String)>) {
        self.store = file.map(|(path, build)| Store::new(path, build));
    }

    /// The kind on `adapter` with these operands as an earlier process of this build kept it,
    /// marked stored and recorded as met, with its choice; `None` if it was not kept.
    pub(super) fn kept(
        &mut self,
        kind: K,
        adapter: &str,
        device: &str,
        operands: Operands,
        chosen: impl Fn(&T) -> C,
    ) -> Option<C> {
        let found: T = self.store.as_mut()?.find(adapter, device, operands)?;
        let choice = chosen(&found);
        self.record(kind, found, choice);
        Some(choice)
    }

    /// Record a kind timed here, and keep it for later processes: a store that cannot be
    /// written is dropped with a warning (the choices stay in the process).
    pub(super) fn timed(&mut self, kind: K, adapter: &str, timing: T, chosen: C) {
        if let Some(store) = self.store.as_mut()
            && let Err(e) = store.keep(adapter, &timing)
        {
            warn(&format!(
                "{} choices not kept: {e}; they hold for this process only",
                self.what
            ));
            self.store = None;
        }
        self.record(kind, timing, chosen);
    }

    fn record(&mut self, kind: K, timing: T, chosen: C) {
        self.by_kind.insert(kind, chosen);
        self.list.push(timing);
    }

    /// Forget the kinds `kind_matches` and their timings `timing_matches`, as a process that
    /// never met them (tests of the kept choices).
    #[cfg(test)]
    pub(super) fn forget(
        &mut self,
        kind_matches: impl Fn(&K) -> bool,
        timing_matches: impl Fn(&T) -> bool,
    ) {
        self.by_kind.retain(|kind, _| !kind_matches(kind));
        self.list.retain(|t| !timing_matches(t));
    }
}

#[cfg(test)]
thread_local! {
    /// A test's choice to time attention on a software adapter too (lavapipe is what CI has);
    /// the products' own stays apart (`product_choice`), so their kinds are not all timed too.
    pub(super) static TIME_SOFTWARE_HERE: std::cell::Cell<bool> =
        const { std::cell::Cell::new(false) };
}

/// How a kind met on `device` (printed as `name`) is chosen: `Some((physical, adapter))` when
/// it is timed, on a physical GPU (`physical`) or, for `hvq ptx-check`, with one launch of each
/// candidate on a software adapter; `None` on a software adapter otherwise, where the caller's
/// candidate for such adapters runs untimed.
pub(super) fn timing_on(device: &Device, name: &str) -> Option<(bool, String)> {
    let (physical, adapter) = product_choice::adapter_of(device, name);
    #[cfg(test)]
    let physical = physical || TIME_SOFTWARE_HERE.with(std::cell::Cell::get);
    (physical || product_choice::timed_on_software_adapters()).then_some((physical, adapter))
}

/// Microseconds per launch of each candidate (`None`: it does not take the inputs, its launch
/// says `false`): each launched once first (compiled, and on a software adapter that launch's
/// time is all), then on a physical GPU [`ROUNDS`] rounds of growing batches of launches taking
/// turns, each candidate kept at its fastest. `Err` where the device cannot be waited for.
pub(super) fn time_candidates<const N: usize>(
    device: &Device,
    candidates: [&dyn Fn() -> bool; N],
    physical: bool,
) -> Result<[Option<f64>; N], String> {
    let mut us = [None; N];
    for (took, launch) in us.iter_mut().zip(candidates) {
        let takes = std::cell::Cell::new(false);
        let first = || takes.set(launch());
        let first_us = product_choice::one_launch_us(device, &first)?;
        *took = takes.get().then_some(first_us);
    }
    if !physical {
        return Ok(us);
    }
    let mut timed = [None; N];
    for _ in 0..ROUNDS {
        for ((best, took), launch) in timed.iter_mut().zip(us).zip(candidates) {
            if took.is_none() {
                continue;
            }
            let launched = || {
                launch();
            };
            let t = product_choice::per_launch_us(device, &launched, false)?;
            *best = Some(best.map_or(t, |b: f64| b.min(t)));
        }
    }
    Ok(timed)
}
