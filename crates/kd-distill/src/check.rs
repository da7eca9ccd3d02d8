//! Input checks and small helpers shared by the losses.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// The dims of `t`, which must have rank `rank`.
pub(crate) fn dims<'a>(
    t: &'a Tensor,
    rank: usize,
    loss: &'static str,
    what: &str,
    layout: &str,
) -> Result<&'a [usize]> {
    if t.rank() != rank {
        return Err(Error::shape(
            loss,
            format!("{what} must be {layout}, got shape {:?}", t.dims()),
        ));
    }
    Ok(t.dims())
}

/// Errors unless `a` and `b` have the same shape.
pub(crate) fn same_shape(
    a: &Tensor,
    b: &Tensor,
    loss: &'static str,
    a_name: &str,
    b_name: &str,
) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(Error::shape(
            loss,
            format!(
                "{a_name} shape {:?} does not match {b_name} shape {:?}",
                a.dims(),
                b.dims()
            ),
        ));
    }
    Ok(())
}

/// The dtype the loss is computed in for an input of dtype `dtype`: `f64` stays, other
/// floats become `f32`; integer inputs are an error.
pub(crate) fn work_dtype(dtype: DType, loss: &'static str, what: &str) -> Result<DType> {
    match dtype {
        DType::F64 => Ok(DType::F64),
        DType::F32 | DType::F16 | DType::BF16 => Ok(DType::F32),
        other => Err(Error::shape(
            loss,
            format!("{what} must be floating-point, got {other:?}"),
        )),
    }
}

/// `t` converted to `dtype` (the working dtype); errors unless `t` is floating-point.
pub(crate) fn as_work(t: &Tensor, dtype: DType, loss: &'static str, what: &str) -> Result<Tensor> {
    work_dtype(t.dtype(), loss, what)?;
    Ok(t.to_dtype(dtype)?)
}

/// A teacher tensor as a constant on the student's device in `dtype`.
pub(crate) fn teacher(
    t: &Tensor,
    like: &Tensor,
    dtype: DType,
    loss: &'static str,
    what: &str,
) -> Result<Tensor> {
    Ok(as_work(&t.detach(), dtype, loss, what)?.to_device(like.device())?)
}

/// Errors unless `temperature` is finite and positive.
pub(crate) fn temperature(temperature: f64, loss: &'static str) -> Result<()> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(Error::invalid(
            loss,
            format!("temperature must be finite and positive, got {temperature}"),
        ));
    }
    Ok(())
}

/// A scalar zero that is still connected to `student` (the sum of an empty slice of it), for
/// losses over zero rows: backward then gives the student a zero gradient instead of none.
pub(crate) fn zero_loss(student: &Tensor, dtype: DType) -> Result<Tensor> {
    let flat = student.flatten_all()?.narrow(0, 0, 0)?;
    Ok(flat.to_dtype(dtype)?.sum_all()?)
}

/// The values of an integer tensor of any rank, on the host, as `i64`.
pub(crate) fn int_values(t: &Tensor, loss: &'static str, what: &str) -> Result<Vec<i64>> {
    if t.dtype().is_float() {
        return Err(Error::shape(
            loss,
            format!("{what} must be an integer tensor, got {:?}", t.dtype()),
        ));
    }
    Ok(t.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?)
}

/// The values of a float tensor of any rank, on the host, as `f64`.
pub(crate) fn float_values(t: &Tensor, loss: &'static str, what: &str) -> Result<Vec<f64>> {
    work_dtype(t.dtype(), loss, what)?;
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}
