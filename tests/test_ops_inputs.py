"""Bad and unusual inputs: each refused with a clear error or handled as NumPy does."""

from __future__ import annotations

import numpy as np
import pytest

from forkwait import ops

ALL_UNARY = ["neg", "abs", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "gelu"]
REDUCTIONS = ["sum", "mean", "max", "min", "argmax"]


def _masked():
    return np.ma.array([1e9, 3.0, 4.0], mask=[True, False, False])


@pytest.mark.parametrize("name", ALL_UNARY + REDUCTIONS + ["softmax", "log_softmax", "layer_norm"])
def test_masked_input_is_refused(name):
    with pytest.raises(TypeError, match="masked arrays are not supported"):
        getattr(ops, name)(_masked())


@pytest.mark.parametrize("name", ["add", "mul", "maximum"])
def test_masked_operand_of_a_binary_op_is_refused(name):
    with pytest.raises(TypeError, match="masked arrays"):
        getattr(ops, name)(_masked(), np.ones(3))
    with pytest.raises(TypeError, match="masked arrays"):
        getattr(ops, name)(np.ones(3), _masked())


def test_masked_matmul_operand_and_masked_out_are_refused():
    with pytest.raises(TypeError, match="masked arrays"):
        ops.matmul(np.ma.array(np.ones((2, 2))), np.ones((2, 2)))
    with pytest.raises(TypeError, match="masked arrays"):
        ops.exp(np.ones(3), out=np.ma.array(np.ones(3)))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_out_may_be_an_ndarray_subclass():
    x = np.array([[0.0, 1.0], [2.0, 3.0]])
    for fn, ref in (
        (lambda o: ops.exp(x, out=o), np.exp(x)),
        (lambda o: ops.add(x, 1.0, out=o), x + 1),
        (lambda o: ops.add(x, x, out=o), x + x),
        (lambda o: ops.softmax(x, out=o), ops.softmax(x)),
        (lambda o: ops.layer_norm(x, out=o), ops.layer_norm(x)),
        (lambda o: ops.matmul(x, x, out=o), x @ x),
        (lambda o: ops.sum(x, axis=0, keepdims=True, out=o), x.sum(0, keepdims=True)),
    ):
        out = np.matrix(np.zeros(ref.shape))
        got = fn(out)
        assert got is out
        np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-15)


def test_big_endian_input_works_everywhere():
    x = np.arange(1.0, 7.0).reshape(2, 3)
    xb = x.astype(">f8")
    np.testing.assert_array_equal(ops.layer_norm(xb), ops.layer_norm(x))
    np.testing.assert_array_equal(ops.layer_norm(x, xb[0].copy(), xb[1].copy()),
                                  ops.layer_norm(x, x[0], x[1]))
    np.testing.assert_array_equal(ops.matmul(xb, xb.T), ops.matmul(x, x.T))
    np.testing.assert_array_equal(ops.matmul(x.astype(">f4"), x.T), ops.matmul(x, x.T))
    np.testing.assert_array_equal(ops.softmax(xb), ops.softmax(x))
    np.testing.assert_array_equal(ops.exp(xb), ops.exp(x))
    assert ops.sum(xb) == ops.sum(x)
    assert ops.layer_norm(xb).dtype == np.float64


@pytest.mark.parametrize("name", REDUCTIONS)
@pytest.mark.parametrize("bad", [True, False, np.True_])
def test_axis_bool_is_refused(name, bad):
    with pytest.raises(TypeError, match="got a bool"):
        getattr(ops, name)(np.ones((2, 3)), axis=bad)
    with pytest.raises(TypeError, match="got a bool"):  # integer inputs too (NumPy's path)
        getattr(ops, name)(np.ones((2, 3), np.int64), axis=bad)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_axis_bool_is_refused_by_row_ops(name):
    with pytest.raises(TypeError, match="got a bool"):
        getattr(ops, name)(np.ones((2, 3)), axis=True)


@pytest.mark.parametrize("name", REDUCTIONS)
def test_dim_is_another_name_for_axis(name):
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    fn = getattr(ops, name)
    for ax in (0, 1, -1):
        np.testing.assert_array_equal(fn(x, dim=ax), fn(x, axis=ax))
    np.testing.assert_array_equal(fn(x, dim=1, keepdims=True), fn(x, axis=1, keepdims=True))
    with pytest.raises(TypeError, match="not both"):
        fn(x, axis=0, dim=0)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_dim_for_row_ops(name):
    x = np.random.default_rng(1).standard_normal((3, 4))
    fn = getattr(ops, name)
    np.testing.assert_array_equal(fn(x, dim=0), fn(x, axis=0))
    np.testing.assert_array_equal(fn(x, dim=-1), fn(x))
    with pytest.raises(TypeError, match="not both"):
        fn(x, axis=0, dim=1)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_tanh_keeps_the_sign_of_zero(dt):
    x = np.array([-0.0, 0.0] * 4000, dt)  # the vector loop and the scalar tail
    got = ops.tanh(x)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(x))
    assert np.signbit(ops.tanh(np.array([-0.0], dt))[0])


@pytest.mark.parametrize("name", ALL_UNARY)
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_signed_zero_follows_numpy_reference(name, dt):
    from _ops_helpers import UNARY_REF

    x = np.array([-0.0, 0.0] * 40, dt)
    with np.errstate(all="ignore"):
        ref = np.asarray(UNARY_REF[name](x)).astype(dt)
        got = getattr(ops, name)(x)
    np.testing.assert_array_equal(got, ref)
    if name != "relu":  # relu(-0.0): NumPy's maximum and torch differ; either is fine
        np.testing.assert_array_equal(np.signbit(got), np.signbit(ref))


def test_ops_namespace_exports_only_ops():
    public = {n for n in dir(ops) if not n.startswith("_")}
    assert public == set(ops.__all__)
    for leaked in ("np", "builtins", "operator", "warnings", "Any"):
        assert not hasattr(ops, leaked)
