//! How packed training rows split into documents, and documents into turns: the positions and
//! the block-causal attention mask that make each packed piece compute what it computes alone at
//! inference.
//!
//! Shapes: B batch, L tokens.

use tch::{Kind, Tensor};

/// The marker tokens a packed row is split by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packing {
    /// Each of these tokens opens a document that sees only itself, with positions from 0.
    pub doc_start: i64,
    /// `(prefix_end, turn_end)`: a document's tokens up to and including its first `prefix_end`
    /// (the end of a chat sample's image) form a prefix; after it, each `turn_end` closes a turn
    /// that sees only the prefix and itself, at positions counted on from the prefix, as if it
    /// alone followed the prefix. None: every token sees its whole document before it.
    pub turns: Option<(i64, i64)>,
}

impl Packing {
    /// Documents only.
    pub fn documents(doc_start: i64) -> Packing {
        Packing { doc_start, turns: None }
    }
}

/// Positions `[B,L]` and the block-causal `[B,1,L,L]` bool mask of packed rows (see [`Packing`]);
/// tokens before a row's first `doc_start` form a document of their own.
pub fn packed_layout(ids: &Tensor, packing: Packing) -> (Tensor, Tensor) {
    let (_, l) = ids.size2().expect("packed ids must be [B,L]");
    let dev = ids.device();
    let long = |t: &Tensor| t.to_kind(Kind::Int64);
    let starts = ids.eq(packing.doc_start);
    let doc = starts.cumsum(1, Kind::Int64);
    let idx = Tensor::arange(l, (Kind::Int64, dev)).unsqueeze(0);
    let opened_at = (&idx * long(&starts)).cummax(1).0;
    let same = doc.unsqueeze(2).eq_tensor(&doc.unsqueeze(1));
    let causal = Tensor::ones([l, l], (Kind::Bool, dev)).tril(0);
    let mask = same.logical_and(&causal);
    let positions = &idx - &opened_at;
    let Some((prefix_end, turn_end)) = packing.turns else {
        return (positions, mask.unsqueeze(1));
    };
    // How many of `marks` lie in a token's document strictly before it (the opening token is
    // never a mark, so counting from it counts within the document).
    let before = |marks: &Tensor| {
        let m = long(marks);
        let exclusive = m.cumsum(1, Kind::Int64) - &m;
        &exclusive - exclusive.gather(1, &opened_at, false)
    };
    let is_end = ids.eq(prefix_end);
    let ends_before = before(&is_end);
    let in_prefix = ends_before.eq(0);
    let turn = before(&ids.eq(turn_end));
    // A turn sees the prefix and itself.
    let sees = in_prefix.unsqueeze(1).logical_or(&turn.unsqueeze(2).eq_tensor(&turn.unsqueeze(1)));
    let mask = mask.logical_and(&sees);
    // Turns open after the prefix's end and after each turn's end; each counts its positions on
    // from the prefix, whose length is that of the document up to its first `prefix_end`.
    let first_end = is_end.logical_and(&ends_before.eq(0));
    let opens_next = first_end.logical_or(&ids.eq(turn_end));
    let opens = opens_next.roll([1], [1]).logical_and(&idx.gt(0));
    let turn_open = (&idx * long(&opens)).cummax(1).0.maximum(&opened_at);
    let prefix_end_at = (&idx * long(&first_end)).cummax(1).0;
    let in_turn = (&prefix_end_at - &opened_at + 1) + (&idx - &turn_open);
    (positions.where_self(&in_prefix, &in_turn), mask.unsqueeze(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOS: i64 = 1;
    const EOS: i64 = 2;
    const EOI: i64 = 9;

    fn layout(row: &[i64], turns: bool) -> (Vec<i64>, Vec<Vec<bool>>) {
        let packing = Packing { doc_start: BOS, turns: turns.then_some((EOI, EOS)) };
        let (pos, mask) = packed_layout(&Tensor::from_slice(row).unsqueeze(0), packing);
        let l = row.len();
        let mask: Vec<bool> = Vec::try_from(mask.reshape([-1])).unwrap();
        (Vec::try_from(pos.reshape([-1])).unwrap(), mask.chunks(l).map(<[bool]>::to_vec).collect())
    }

    #[test]
    fn later_turns_see_the_prefix_and_themselves_at_the_first_turns_positions() {
        // A generation document, then a chat document with three turns.
        let row = [BOS, 5, EOI, EOS, BOS, 6, 7, EOI, 3, 4, EOS, 3, 5, EOS, 8, EOS];
        let (pos, mask) = layout(&row, true);
        assert_eq!(pos, [0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 4, 5, 6, 4, 5]);
        let sees = |i: usize| (0..row.len()).filter(|&j| mask[i][j]).collect::<Vec<_>>();
        assert_eq!(sees(3), [0, 1, 2, 3], "a generation document is plain causal");
        assert_eq!(sees(10), [4, 5, 6, 7, 8, 9, 10], "the first turn follows its prefix");
        assert_eq!(sees(12), [4, 5, 6, 7, 11, 12], "the second turn skips the first");
        assert_eq!(sees(15), [4, 5, 6, 7, 14, 15]);
        // Without turns, the chat document is plain causal from its opening.
        let (pos, mask) = layout(&row, false);
        assert_eq!(&pos[4..], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert!((4..=15).all(|j| mask[15][j]) && !mask[15][3]);
    }

    #[test]
    fn a_document_without_its_prefix_end_stays_causal() {
        let row = [7, 8, BOS, 5, 6, EOS, 4];
        let (plain_pos, plain_mask) = layout(&row, false);
        assert_eq!(layout(&row, true), (plain_pos.clone(), plain_mask));
        assert_eq!(plain_pos, [0, 1, 0, 1, 2, 3, 4]);
    }
}
