//! The input type the nom parsers run on: a byte slice in a crate-local newtype, so that every
//! `nom::Input` method is `#[inline]`. nom 8.0's own implementation for `&[u8]` leaves
//! `input_len` and `take_from` without it; rustc 1.95 inlines them anyway (measured, see the
//! README's Parsing section), but the hot path need not depend on that heuristic.

use std::iter::{Copied, Enumerate};
use std::slice::Iter;

use nom::{Input, Needed};

/// Bytes being parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

/// The parsers' result. Errors carry nothing: every failure is mapped onto a `DecodeError`
/// (or onto "need more bytes" for `Incomplete`) by the code that knows what was being parsed.
pub(crate) type PResult<'a, T> = nom::IResult<Bytes<'a>, T, ()>;

impl<'a> Input for Bytes<'a> {
    type Item = u8;
    type Iter = Copied<Iter<'a, u8>>;
    type IterIndices = Enumerate<Self::Iter>;

    #[inline]
    fn input_len(&self) -> usize {
        self.0.len()
    }

    #[inline]
    fn take(&self, index: usize) -> Self {
        Bytes(&self.0[..index])
    }

    #[inline]
    fn take_from(&self, index: usize) -> Self {
        Bytes(&self.0[index..])
    }

    #[inline]
    fn take_split(&self, index: usize) -> (Self, Self) {
        let (prefix, suffix) = self.0.split_at(index);
        (Bytes(suffix), Bytes(prefix))
    }

    #[inline]
    fn position<P>(&self, predicate: P) -> Option<usize>
    where
        P: Fn(Self::Item) -> bool,
    {
        self.0.iter().position(|&b| predicate(b))
    }

    #[inline]
    fn iter_elements(&self) -> Self::Iter {
        self.0.iter().copied()
    }

    #[inline]
    fn iter_indices(&self) -> Self::IterIndices {
        self.iter_elements().enumerate()
    }

    #[inline]
    fn slice_index(&self, count: usize) -> Result<usize, Needed> {
        if self.0.len() >= count {
            Ok(count)
        } else {
            Err(Needed::new(count - self.0.len()))
        }
    }
}
