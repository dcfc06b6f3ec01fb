//! Which of the ResNet's two layouts runs faster where the model runs, found by timing both at
//! load. The answer depends on the GPU and its libraries (cuBLAS on one GEMM over a batch's
//! pixels, channels-last, against one small GEMM per image, channels-first), so it is measured
//! on the device rather than fixed in the build.

use candle_core::Result;

use crate::network::resnet::ResNetLayout;

/// Both layouts' times for one ResNet pass, and the one kept.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LayoutTuning {
    /// Images per timed pass (the largest batch the caller will run).
    pub batch_size: usize,
    /// Best of two passes after one untimed pass, in ms.
    pub channels_last_ms: f64,
    pub channels_first_ms: f64,
    /// The faster; channels-last on a tie, as the int8 blocks and the GPU's default are.
    pub chosen: ResNetLayout,
}

/// What is tuned: a ResNet whose blocks can be switched between layouts and timed.
pub trait LayoutSubject {
    fn set_layout(&mut self, layout: ResNetLayout) -> Result<()>;
    /// One pass, in ms.
    fn time_pass(&mut self) -> Result<f64>;
}

/// Times `subject` in each layout (one untimed pass first: kernel loading, allocation, a
/// library's choice of algorithm; then the best of two), and leaves it in the faster.
pub fn tune(batch_size: usize, subject: &mut impl LayoutSubject) -> Result<LayoutTuning> {
    let mut best = |layout| -> Result<f64> {
        subject.set_layout(layout)?;
        subject.time_pass()?;
        Ok(subject.time_pass()?.min(subject.time_pass()?))
    };
    let channels_last_ms = best(ResNetLayout::ChannelsLast)?;
    let channels_first_ms = best(ResNetLayout::ChannelsFirst)?;
    let chosen = if channels_first_ms < channels_last_ms {
        ResNetLayout::ChannelsFirst
    } else {
        ResNetLayout::ChannelsLast
    };
    subject.set_layout(chosen)?;
    Ok(LayoutTuning {
        batch_size,
        channels_last_ms,
        channels_first_ms,
        chosen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per layout: an untimed first pass, then two timed ones, from the given times.
    struct Fake {
        times: [[f64; 3]; 2],
        layout: Option<ResNetLayout>,
        passes: [usize; 2],
    }

    impl LayoutSubject for Fake {
        fn set_layout(&mut self, layout: ResNetLayout) -> Result<()> {
            self.layout = Some(layout);
            Ok(())
        }

        fn time_pass(&mut self) -> Result<f64> {
            let i = match self.layout {
                Some(ResNetLayout::ChannelsLast) => 0,
                Some(ResNetLayout::ChannelsFirst) => 1,
                None => candle_core::bail!("no layout set"),
            };
            self.passes[i] += 1;
            Ok(self.times[i][self.passes[i] - 1])
        }
    }

    fn tuned(last: [f64; 3], first: [f64; 3]) -> (LayoutTuning, Fake) {
        let mut fake = Fake {
            times: [last, first],
            layout: None,
            passes: [0, 0],
        };
        let t = tune(16, &mut fake).unwrap();
        assert_eq!(fake.passes, [3, 3]);
        (t, fake)
    }

    #[test]
    fn the_faster_layout_is_chosen_from_the_best_of_the_timed_passes_and_left_set() {
        let (t, fake) = tuned([900.0, 12.0, 10.0], [5.0, 30.0, 31.0]);
        assert_eq!((t.channels_last_ms, t.channels_first_ms), (10.0, 30.0));
        assert_eq!((t.chosen, t.batch_size), (ResNetLayout::ChannelsLast, 16));
        assert_eq!(fake.layout, Some(ResNetLayout::ChannelsLast));
        let (t, fake) = tuned([1.0, 12.0, 10.0], [900.0, 9.0, 31.0]);
        assert_eq!(t.chosen, ResNetLayout::ChannelsFirst);
        assert_eq!(fake.layout, Some(ResNetLayout::ChannelsFirst));
        let (t, _) = tuned([1.0, 10.0, 10.0], [1.0, 10.0, 10.0]);
        assert_eq!(t.chosen, ResNetLayout::ChannelsLast);
    }
}
