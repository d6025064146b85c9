//! The CPU backend's element-wise operations on tensors large enough to be split across the
//! thread pool (the `hvq patch` in `vendor/burn-flex/src/par.rs` and `zip.rs`: from 64 K
//! elements) against the same f32 arithmetic on the host, bit for bit: every path of the patch
//! (in place and allocating, contiguous, broadcast rows, broadcast columns, a transposed operand,
//! scalar, unary, comparison), on shapes whose chunks do not divide evenly.

use burn::tensor::{Device, Tensor, TensorData};

const B: usize = 3;
const L: usize = 197;
const D: usize = 301; // B·L·D = 177 891 elements: above the split, not a multiple of a chunk

fn host(t: Tensor<3>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
        })
        .collect()
}

fn tensor(v: &[f32], shape: [usize; 3], device: &Device) -> Tensor<3> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), device)
}

fn same(got: Vec<f32>, want: impl Iterator<Item = f32>, what: &str) {
    let want: Vec<f32> = want.collect();
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad = got
        .iter()
        .zip(&want)
        .position(|(a, b)| a.to_bits() != b.to_bits());
    assert!(
        bad.is_none(),
        "{what}: element {} is {} instead of {}",
        bad.unwrap(),
        got[bad.unwrap()],
        want[bad.unwrap()]
    );
}

#[test]
fn large_element_wise_operations_equal_the_host_arithmetic() {
    let device = Device::flex();
    let n = B * L * D;
    let (a, b) = (values(n, 1), values(n, 2));
    let row = values(D, 3);
    let col = values(B * L, 4);
    let ta = tensor(&a, [B, L, D], &device);
    let tb = tensor(&b, [B, L, D], &device);

    // Both operands shared (allocating, contiguous).
    same(
        host(ta.clone() + tb.clone()),
        a.iter().zip(&b).map(|(x, y)| x + y),
        "a + b",
    );
    // Left operand unique (in place), subtraction keeps its order.
    same(
        host(tensor(&a, [B, L, D], &device) - tb.clone()),
        a.iter().zip(&b).map(|(x, y)| x - y),
        "unique a − b",
    );
    // A row broadcast over every position (many runs), shared and in place.
    let bias = tensor(&row, [1, 1, D], &device);
    let want_bias = || a.iter().enumerate().map(|(i, x)| x * row[i % D]);
    same(host(ta.clone() * bias.clone()), want_bias(), "a · row");
    same(
        host(tensor(&a, [B, L, D], &device) * bias),
        want_bias(),
        "unique a · row",
    );
    // A column broadcast along the last axis (stride 0 inner runs).
    let column = tensor(&col, [B, L, 1], &device);
    same(
        host(ta.clone() / column.clone()),
        a.iter().enumerate().map(|(i, x)| x / col[i / D]),
        "a / column",
    );
    // A transposed operand (strided inner runs).
    let tt = tensor(&b, [B, D, L], &device).swap_dims(1, 2);
    same(
        host(ta.clone() + tt),
        (0..n).map(|i| {
            let (bi, rest) = (i / (L * D), i % (L * D));
            let (l, d) = (rest / D, rest % D);
            a[i] + b[bi * D * L + d * L + l]
        }),
        "a + transposed",
    );
    // Scalar (allocating and in place) and unary.
    same(
        host(ta.clone().mul_scalar(0.37)),
        a.iter().map(|x| x * 0.37),
        "a · 0.37",
    );
    same(
        host(tensor(&a, [B, L, D], &device).add_scalar(-1.5)),
        a.iter().map(|x| x + -1.5),
        "unique a + (−1.5)",
    );
    same(host(ta.clone().abs()), a.iter().map(|x| x.abs()), "|a|");
    same(
        host(tensor(&a, [B, L, D], &device).neg()),
        a.iter().map(|x| -x),
        "unique −a",
    );
    // A comparison through the same broadcast machinery.
    let greater: Vec<f32> = host(ta.greater(tb).float());
    same(
        greater,
        a.iter().zip(&b).map(|(x, y)| if x > y { 1.0 } else { 0.0 }),
        "a > b",
    );
}
