//! The optional progress bar of long maps (feature `progress`, `indicatif`).

/// A progress bar, or nothing (the default, and always without the feature).
#[derive(Clone, Default)]
pub(crate) struct Progress {
    #[cfg(feature = "progress")]
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// A bar of `len` tasks (unknown length: a spinner with a count) when
    /// `enabled`; nothing otherwise.
    #[cfg_attr(not(feature = "progress"), allow(unused_variables))]
    pub(crate) fn new(enabled: bool, len: Option<u64>) -> Progress {
        #[cfg(feature = "progress")]
        {
            if !enabled {
                return Progress::default();
            }
            let bar = match len {
                Some(n) => indicatif::ProgressBar::new(n),
                None => indicatif::ProgressBar::no_length(),
            };
            let style = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} tasks ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            Progress { bar: Some(bar) }
        }
        #[cfg(not(feature = "progress"))]
        Progress::default()
    }

    /// `n` more tasks are done.
    #[cfg_attr(not(feature = "progress"), allow(unused_variables))]
    pub(crate) fn inc(&self, n: u64) {
        #[cfg(feature = "progress")]
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// All done: leave the bar at its final state.
    pub(crate) fn finish(&self) {
        #[cfg(feature = "progress")]
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}
