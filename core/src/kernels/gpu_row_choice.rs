//! The column of each row's largest or smallest value under a stated rule, as one GPU kernel
//! (CubeCL: wgpu, CUDA): the class each image is given when its class is left to the model
//! (`class_choice`: the classifier's last largest logit, or the first lowest class score).
//!
//! Composed from burn's operations a choice is eight launches a batch on wgpu (NaN masked: two;
//! the row's extreme; the comparison with it, cast to integers and multiplied by the columns'
//! weights; their maximum; the offset), inside every pass of `hvq predict`'s default command.
//! The rows are few (one per image) and short (one value per class), so here one thread walks
//! a row.

use burn::tensor::{Int, Tensor as BurnTensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::RowChoice;
use super::gpu::{grid, index_type, int_dtype, plain_f32};

/// One thread per row. With `last_maximum`, NaN and −∞ rank lowest and alike, and the last of the
/// values ranked highest is kept; otherwise NaN and +∞ rank highest and alike, and the first of
/// the values ranked lowest. A row whose every value ranks at the infinity keeps its last column
/// (largest) or its first (smallest), as the host twins do. No infinity is written as a
/// constant (WGSL has none): `ranked` says whether `best` holds a value yet.
#[cube(launch)]
fn row_choice_kernel<I: Numeric>(
    values: &Tensor<f32>,
    chosen: &mut Tensor<I>,
    #[comptime] last_maximum: bool,
    #[define(I)] _index: ElemType,
) {
    let row = ABSOLUTE_POS;
    if row >= chosen.len() {
        terminate!();
    }
    let (columns, row_start, column_stride) =
        (values.shape(1), row * values.stride(0), values.stride(1));
    let mut column = 0usize;
    let mut best = 0.0f32;
    let mut ranked = false;
    for j in 0..columns {
        let v = values[row_start + j * column_stride];
        if last_maximum {
            if v.is_nan() || (v.is_inf() && v < 0.0) {
                // At −∞: it ties every earlier value there, and only those.
                if !ranked {
                    column = j;
                }
            } else if !ranked || v >= best {
                column = j;
                best = v;
                ranked = true;
            }
        } else if !(v.is_nan() || (v.is_inf() && v > 0.0)) && (!ranked || v < best) {
            column = j;
            best = v;
            ranked = true;
        }
    }
    chosen[row] = I::cast_from(column as u32);
}

/// The column [`RowChoice`] picks in each row of `values [rows, columns]`, `[rows]`, in one
/// launch; `None` when `values` is not a plain f32 tensor of this process's GPU backend, has no
/// columns, or the device's integer type is not a 32- or 64-bit integer (the caller composes
/// it). Rows and columns are read at the tensor's strides.
pub fn row_choice(values: &BurnTensor<2>, rule: RowChoice) -> Option<BurnTensor<1, Int>> {
    let [rows, columns] = values.dims();
    if columns == 0 || columns > u32::MAX as usize {
        return None;
    }
    let int_dtype = int_dtype(&values.device());
    let values = plain_f32(values.clone())?;
    let index_type = index_type(int_dtype)?;
    let chosen = empty_device_contiguous_dtype(
        values.client.clone(),
        values.device.clone(),
        vec![rows].into(),
        int_dtype,
    );
    if rows > 0 {
        let (cube_count, cube_dim) = grid(&chosen, rows);
        row_choice_kernel::launch(
            &chosen.client,
            cube_count,
            cube_dim,
            values.into_tensor_arg(),
            chosen.clone().into_tensor_arg(),
            rule == RowChoice::LastMaximum,
            index_type,
        );
    }
    Some(BurnTensor::from_primitive::<CubeBackend>(chosen))
}
