//! ILP amounts and Lightning amounts.
//!
//! ILP amounts are integers in the units of the asset the peers agreed on: satoshis (asset scale
//! 0, what the JS plugin uses) or, between two of our plugins that agree on it, millisatoshis
//! (scale 3). The books and Lightning count millisatoshis. [`Unit`] converts between the two with
//! checked arithmetic: an amount that does not fit is an error, never a wrapped number.

use std::fmt;

/// The ILP unit an account's amounts are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Unit {
    msat_per_unit: u64,
    scale: u8,
}

/// An asset scale this crate cannot settle: Lightning's smallest amount is one millisatoshi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedScale(pub u8);

impl fmt::Display for UnsupportedScale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "asset scale {} is not supported: BTC amounts go from scale 0 (satoshis) to 3 \
             (millisatoshis)",
            self.0
        )
    }
}

impl std::error::Error for UnsupportedScale {}

impl Unit {
    /// Satoshis: asset scale 0, the JS plugin's unit.
    pub const SATOSHI: Unit = Unit {
        msat_per_unit: 1000,
        scale: 0,
    };
    /// Millisatoshis: asset scale 3.
    pub const MILLISATOSHI: Unit = Unit {
        msat_per_unit: 1,
        scale: 3,
    };

    /// The unit of an ILP asset of code BTC and `scale` (0 = satoshi ... 3 = millisatoshi).
    pub fn from_asset_scale(scale: u8) -> Result<Unit, UnsupportedScale> {
        let msat_per_unit = match scale {
            0 => 1000,
            1 => 100,
            2 => 10,
            3 => 1,
            other => return Err(UnsupportedScale(other)),
        };
        Ok(Unit {
            msat_per_unit,
            scale,
        })
    }

    /// The asset scale.
    pub fn asset_scale(self) -> u8 {
        self.scale
    }

    /// Millisatoshis in one unit.
    pub fn msat_per_unit(self) -> u64 {
        self.msat_per_unit
    }

    /// `units` in millisatoshis (cannot overflow: u64 × 1000 fits in u128).
    pub fn to_msat(self, units: u64) -> u128 {
        u128::from(units) * u128::from(self.msat_per_unit)
    }

    /// A signed amount of units in millisatoshis.
    pub fn signed_to_msat(self, units: i64) -> i128 {
        i128::from(units) * i128::from(self.msat_per_unit)
    }

    /// The whole units in `msat`, rounded down: what can be paid or reported without paying
    /// more than `msat`. The rest stays in the books.
    pub fn whole_units(self, msat: u128) -> u64 {
        u64::try_from(msat / u128::from(self.msat_per_unit)).unwrap_or(u64::MAX)
    }

    /// `msat` rounded down to a whole number of units, in millisatoshis.
    pub fn round_down_msat(self, msat: u128) -> u128 {
        msat - msat % u128::from(self.msat_per_unit)
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scale {
            0 => f.write_str("sat"),
            3 => f.write_str("msat"),
            scale => write!(f, "BTC scale {scale}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_down_and_never_overflow() {
        assert_eq!(Unit::SATOSHI.to_msat(5), 5000);
        assert_eq!(Unit::SATOSHI.to_msat(u64::MAX), u128::from(u64::MAX) * 1000);
        assert_eq!(Unit::SATOSHI.whole_units(5999), 5);
        assert_eq!(Unit::SATOSHI.round_down_msat(5999), 5000);
        assert_eq!(Unit::MILLISATOSHI.whole_units(5999), 5999);
        assert_eq!(Unit::MILLISATOSHI.round_down_msat(5999), 5999);
        assert_eq!(Unit::SATOSHI.whole_units(u128::MAX), u64::MAX);
        assert_eq!(Unit::SATOSHI.signed_to_msat(-2), -2000);
    }

    #[test]
    fn scales_beyond_millisatoshi_are_refused() {
        assert_eq!(Unit::from_asset_scale(0).unwrap(), Unit::SATOSHI);
        assert_eq!(Unit::from_asset_scale(3).unwrap(), Unit::MILLISATOSHI);
        assert_eq!(Unit::from_asset_scale(2).unwrap().msat_per_unit(), 10);
        assert!(Unit::from_asset_scale(4)
            .unwrap_err()
            .to_string()
            .contains("scale 4"));
        assert!(Unit::from_asset_scale(8).is_err());
    }
}
