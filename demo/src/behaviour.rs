//! How the example services and responders decide: a fail rate and a seed, and the
//! fixed hash that turns them into the same decision on every run. Apart from the
//! services (feature `http`), because the bus responders of [`sagas`](crate::sagas)
//! decide the same way.

/// How the services decide.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    /// The chance that an operation is refused for good.
    pub fail_rate: f64,
    /// Seeds the decisions.
    pub seed: u64,
}

/// A number in [0, 1) from a fixed hash of `parts`: the same decision on every run with
/// the same seed.
pub fn unit(parts: &[&str], seed: u64) -> f64 {
    let mut h: u64 = seed ^ 0x6B65_656C_6465_6D6F;
    for part in parts {
        for byte in part.bytes() {
            h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3);
        }
        h = mix(h ^ 0xFF);
    }
    (mix(h) >> 11) as f64 / (1u64 << 53) as f64
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_fixed_by_the_seed_and_spread() {
        assert_eq!(unit(&["a", "b"], 1), unit(&["a", "b"], 1));
        assert_ne!(unit(&["a", "b"], 1), unit(&["a", "b"], 2));
        assert_ne!(unit(&["ab"], 1), unit(&["a", "b"], 1));
        let below = (0..10_000)
            .filter(|n| unit(&[&n.to_string()], 7) < 0.2)
            .count();
        assert!((1_700..2_300).contains(&below), "{below}");
    }
}
