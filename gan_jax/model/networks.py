"""The tutorial's Generator and Discriminator in flax.linen (NHWC), with its shape bug fixed, and the
DCGAN family for 32, 64 and 128 pixels with any channel count.

Generator: z (latent_dim) -> 1x1 -> ConvT k7 -> 7x7x(2w) -> ConvT k4 s2 -> 14x14x(w) -> ConvT k4 s2 ->
28x28x1, tanh. Discriminator: 28x28x1 -> Conv k4 s2 -> 14x14x(w) -> Conv k4 s2 -> 7x7x(2w) -> Dense -> one
logit per image (no sigmoid: the loss takes logits). With the default widths (64) the parameter counts
equal the PyTorch peer's: generator 759,873, discriminator 138,817.

For other images (a user's own, `gan_jax.data.images`) the same layers follow DCGAN (Radford et al.
2016): G projects z to 4x4 and doubles the size with each transposed convolution, halving the features,
to size x size x channels; D mirrors it down to 4x4. `generator_layers` and `depth` say which layers an
image size gets; the 28-pixel networks are the tutorial's exactly.

Initialization mirrors the tutorial by default: PyTorch's layer defaults, uniform(-1/sqrt(fan_in),
1/sqrt(fan_in)) for weights and biases, where a transposed convolution's fan-in is out_features * kh * kw
(PyTorch reads it from dim 1 of its (in, out, kh, kw) weight). `init_scheme="dcgan"` gives the DCGAN paper's
N(0, 0.02) weights, zero biases and N(1, 0.02) BatchNorm scales.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.model.conv_transpose import conv as canonical_conv
from gan_jax.model.conv_transpose import conv_transpose

# PyTorch's ConvTranspose2d(k=4, s=2, p=1) doubles the size; lax.conv_transpose pads the dilated input
# by k - 1 - p on each side for the same result.
_UPSAMPLE_PADDING = ((2, 2), (2, 2))
_DOWNSAMPLE_PADDING = ((1, 1), (1, 1))
# PyTorch's BatchNorm2d(momentum=0.1, eps=1e-5) in flax's terms (momentum is the decay of the average).
BATCH_NORM = dict(momentum=0.9, epsilon=1e-5)


def _uniform(bound: float) -> nn.initializers.Initializer:
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def layer_initializers(init_scheme: str, fan_in: int) -> dict[str, nn.initializers.Initializer]:
    """kernel_init and bias_init for a conv, transposed conv or dense layer with the given fan-in."""
    if init_scheme == "pytorch":
        bound = 1.0 / math.sqrt(fan_in)
        return dict(kernel_init=_uniform(bound), bias_init=_uniform(bound))
    if init_scheme == "dcgan":
        return dict(kernel_init=nn.initializers.normal(0.02), bias_init=nn.initializers.zeros)
    raise ValueError(f"unknown init_scheme {init_scheme!r}")


def batch_norm_scale_init(init_scheme: str) -> nn.initializers.Initializer:
    if init_scheme == "dcgan":
        return lambda key, shape, dtype=jnp.float32: 1.0 + 0.02 * jax.random.normal(key, shape, dtype)
    return nn.initializers.ones


class ConvTranspose(nn.Module):
    """`nn.ConvTranspose` with the same parameters ("kernel" HWIO, "bias"), computed by `impl`."""

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int]
    padding: Any
    init_scheme: str = "pytorch"
    impl: str = "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        inits = layer_initializers(self.init_scheme, fan_in=self.features * kh * kw)
        kernel = self.param("kernel", inits["kernel_init"], (kh, kw, x.shape[-1], self.features))
        bias = self.param("bias", inits["bias_init"], (self.features,))
        x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
        return conv_transpose(x, kernel, self.strides, self.padding, self.impl) + bias


class Conv(nn.Module):
    """`nn.Conv` (same parameters "kernel" HWIO and "bias", explicit padding) with canonical gradients."""

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int]
    padding: Any
    kernel_init: Any
    bias_init: Any
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
        padding = tuple((int(lo), int(hi)) for lo, hi in self.padding)
        return canonical_conv(x, kernel, tuple(self.strides), padding) + bias


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without its own scale and shift, then a scale and shift looked up per class
    (de Vries et al. 2017; Miyato & Koyama 2018): class-conditional BatchNorm. The scales start at 1
    and the shifts at 0, as BatchNorm's do."""

    num_classes: int
    norm: dict

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array) -> jax.Array:
        norm = {k: v for k, v in self.norm.items() if k != "scale_init"}
        x = nn.BatchNorm(use_scale=False, use_bias=False, **norm)(x)
        features = x.shape[-1]
        scale = nn.Embed(self.num_classes, features, embedding_init=nn.initializers.ones,
                         name="scale")(labels)
        shift = nn.Embed(self.num_classes, features, embedding_init=nn.initializers.zeros,
                         name="shift")(labels)
        return x * scale[:, None, None, :].astype(x.dtype) + shift[:, None, None, :].astype(x.dtype)


def depth(image_size: int) -> int:
    """How many stride-2 layers D has (and G, counting its last): 2 for the tutorial's 28 (28 -> 14 ->
    7), else DCGAN's, down to 4x4 (32: 3, 64: 4, 128: 5)."""
    if image_size == 28:
        return 2
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"no network for {image_size}x{image_size} images: 28 or a power of 2 >= 8")
    return int(math.log2(image_size)) - 2


def generator_layers(width: int, image_size: int, channels: int) -> list[tuple[int, int, int, Any]]:
    """G's transposed convolutions as (features, kernel, stride, padding), from z (1x1) to the image.

    28: the tutorial's 1 -> 7 (k7) -> 14 -> 28 with 2w, w, channels features. Otherwise DCGAN's:
    1 -> 4 (k4) with w * 2^(n-1) features, then each stride-2 layer doubles the size and halves the
    features, the last giving `channels` (32: 4w, 2w, w, channels).
    """
    if image_size == 28:
        return [(2 * width, 7, 1, "VALID"), (width, 4, 2, _UPSAMPLE_PADDING),
                (channels, 4, 2, _UPSAMPLE_PADDING)]
    n = depth(image_size)
    return ([(width * 2 ** (n - 1), 4, 1, "VALID")] +
            [(width * 2 ** (n - 1 - i), 4, 2, _UPSAMPLE_PADDING) for i in range(1, n)] +
            [(channels, 4, 2, _UPSAMPLE_PADDING)])


class Generator(nn.Module):
    """z (batch, latent_dim) [and class labels (batch,)] -> images (batch, size, size, channels) in
    [-1, 1], through `generator_layers` (the tutorial's for 28x28, DCGAN's for 32, 64 and 128).

    With `num_classes > 0` G is conditioned on a class label (`condition`): "concat" joins a learned
    embedding of the label (num_classes numbers) to z, the classic cGAN (Mirza & Osindero 2014);
    "cbn" replaces every BatchNorm with a class-conditional one.
    """

    width: int = 64
    init_scheme: str = "pytorch"
    conv_transpose: str = "xla"
    axis_name: str | None = None  # BatchNorm statistics are averaged over this pmap/shard_map axis
    dtype: Any = jnp.float32
    num_classes: int = 0
    condition: str = "concat"
    image_size: int = 28
    channels: int = 1

    @nn.compact
    def __call__(self, z: jax.Array, train: bool, labels: jax.Array | None = None) -> jax.Array:
        layer = dict(init_scheme=self.init_scheme, impl=self.conv_transpose, dtype=self.dtype)
        norm = dict(use_running_average=not train, axis_name=self.axis_name, dtype=self.dtype,
                    scale_init=batch_norm_scale_init(self.init_scheme), **BATCH_NORM)
        if self.num_classes and self.condition == "concat":
            # The embedding has z's scale, N(0, 1), so the label weighs like the noise at the start.
            embedded = nn.Embed(self.num_classes, self.num_classes,
                                embedding_init=nn.initializers.normal(1.0))(labels)
            z = jnp.concatenate([z, embedded.astype(z.dtype)], axis=-1)

        def batch_norm(x):
            if self.num_classes and self.condition == "cbn":
                return ConditionalBatchNorm(self.num_classes, norm)(x, labels)
            return nn.BatchNorm(**norm)(x)

        x = z.reshape(z.shape[0], 1, 1, z.shape[-1])
        # The tutorial's first layer had k4, which gave 4x4; k7 gives the 7x7 its next layers need.
        layers = generator_layers(self.width, self.image_size, self.channels)
        for index, (features, kernel, stride, padding) in enumerate(layers):
            x = ConvTranspose(features, (kernel, kernel), (stride, stride), padding, **layer)(x)
            if index < len(layers) - 1:
                x = nn.relu(batch_norm(x))
        return jnp.tanh(x.astype(jnp.float32))


def minibatch_stddev(x: jax.Array, group_size: int) -> jax.Array:
    """x (batch, h, w, c) with one more channel: the minibatch standard deviation (Karras et al. 2018,
    "Progressive Growing of GANs"), a diversity signal for D.

    The batch is cut into consecutive groups of `group_size` images; each group's standard deviation
    of every feature over its images, averaged over the features, fills the new channel of its images.
    A batch of near-copies (a collapsing G) gets a small value, which D can learn to spot. Consecutive
    groups make the feature the same on N devices as on one, as long as each device's share of the
    batch is a whole number of groups (checked with the devices). A batch that is no whole number of
    groups (the one image of `init`, an odd count in inference) takes the largest group size that
    divides it.
    """
    batch, height, width, channels = x.shape
    group_size = math.gcd(batch, group_size)
    groups = x.reshape(batch // group_size, group_size, height, width, channels).astype(jnp.float32)
    std = jnp.sqrt(groups.var(axis=1) + 1e-8).mean(axis=(1, 2, 3))  # (groups,)
    feature = jnp.broadcast_to(jnp.repeat(std, group_size)[:, None, None, None], (batch, height, width, 1))
    return jnp.concatenate([x, feature.astype(x.dtype)], axis=-1)


def split_output(output: Any) -> tuple[jax.Array, jax.Array | None]:
    """D's output as (logits, class logits): an ACGAN's D returns both, every other D the logits."""
    return output if isinstance(output, tuple) else (output, None)


class Discriminator(nn.Module):
    """images (batch, size, size, channels) in [-1, 1] [and class labels (batch,)] -> logits (batch,).

    The images' side sets the depth (`depth`): the tutorial's two convolutions for 28, DCGAN's down to
    4x4 for 32, 64 and 128, the features doubling at each.

    `norm` is how D is normalized: "batch" (the tutorial's BatchNorm after the second convolution),
    "spectral" (every layer's weight divided by its largest singular value, estimated by one power
    iteration per call; Miyato et al. 2018) or "none". Spectral normalization keeps its power-iteration
    vectors in the `batch_stats` collection and updates them in training mode only. Without BatchNorm
    each image's logit depends on that image alone, which the gradient penalties need.

    With `num_classes > 0` D sees the label (`condition`): "projection" adds the inner product of a
    label embedding with D's features to the logit (Miyato & Koyama 2018); "concat" joins one map per
    class (one-hot) to the image's channels; "acgan" adds a head that classifies the image (Odena et
    al. 2017) and then returns (logits, class logits (batch, num_classes)).
    """

    width: int = 64
    init_scheme: str = "pytorch"
    norm: str = "batch"
    axis_name: str | None = None
    dtype: Any = jnp.float32
    num_classes: int = 0
    condition: str = "projection"
    minibatch_std: int = 0  # group size of the minibatch standard deviation feature (0: none)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, labels: jax.Array | None = None,
                 features_only: bool = False):
        """Logits (and an ACGAN's class logits); with `features_only`, the penultimate features
        (batch, features) instead, which need no labels unless D takes them with the image
        ("concat")."""
        def layer(module: nn.Module, x: jax.Array) -> jax.Array:
            if self.norm == "spectral":
                return nn.SpectralNorm(module)(x, update_stats=train)
            return module(x)

        def conv(features, x):
            inits = layer_initializers(self.init_scheme, fan_in=x.shape[-1] * 4 * 4)
            return layer(Conv(features, (4, 4), (2, 2), _DOWNSAMPLE_PADDING, dtype=self.dtype, **inits), x)

        conditional = self.num_classes > 0
        if conditional and self.condition == "concat":
            maps = jax.nn.one_hot(labels, self.num_classes, dtype=x.dtype)[:, None, None, :]
            x = jnp.concatenate([x, jnp.broadcast_to(maps, (*x.shape[:3], self.num_classes))], axis=-1)
        # The tutorial's (28 -> 14 -> 7, w then 2w features) and DCGAN's (down to 4x4, doubling the
        # features), by the images' side: BatchNorm after every convolution but the first.
        num_convs = depth(x.shape[1])
        x = nn.leaky_relu(conv(self.width, x), 0.2)
        for index in range(1, num_convs):
            x = conv(self.width * 2 ** index, x)
            if self.norm == "batch":
                x = nn.BatchNorm(use_running_average=not train, axis_name=self.axis_name,
                                 dtype=self.dtype, scale_init=batch_norm_scale_init(self.init_scheme),
                                 **BATCH_NORM)(x)
            x = nn.leaky_relu(x, 0.2)
        if self.minibatch_std:
            x = minibatch_stddev(x, self.minibatch_std)
        features = x.reshape(x.shape[0], -1)
        if features_only:
            return features
        inits = layer_initializers(self.init_scheme, fan_in=features.shape[-1])
        logits = layer(nn.Dense(1, dtype=self.dtype, **inits), features)[:, 0]
        if conditional and self.condition == "projection":
            # Scaled like the dense layer's weights, so the projection starts as large as the logit.
            embedded = nn.Embed(self.num_classes, features.shape[-1],
                                embedding_init=inits["kernel_init"])(labels)
            logits = logits + jnp.sum(embedded.astype(features.dtype) * features, axis=-1)
        # The loss is computed in float32 at least, whatever the layers compute in (bfloat16).
        out_dtype = jnp.promote_types(self.dtype, jnp.float32)
        if conditional and self.condition == "acgan":
            class_logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier", **inits)(features)
            return logits.astype(out_dtype), class_logits.astype(out_dtype)
        return logits.astype(out_dtype)
