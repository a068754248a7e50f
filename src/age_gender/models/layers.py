"""Custom layers, registered so ``keras.models.load_model`` needs no ``custom_objects``."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="age_gender")
class CrossStitch(keras.layers.Layer):
    """Cross-stitch unit (Misra et al., 2016) between two task branches.

    ``[a, b] -> [aa*a + ab*b, ba*a + bb*b]`` with a learned 2x2 mixing, shared over the whole
    tensor or one per channel (``per_channel=True``). Its size is 4 or 4*C weights whatever
    the feature map's size, so it fits on convolutional layers too.
    """

    def __init__(self, per_channel: bool = True, self_weight: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        self.per_channel = per_channel
        self.self_weight = self_weight

    def build(self, input_shape):
        shape_a, shape_b = input_shape
        if tuple(shape_a[1:]) != tuple(shape_b[1:]):
            raise ValueError(f"CrossStitch needs two tensors of one shape, got {shape_a} and {shape_b}")
        channels = shape_a[-1] if self.per_channel else 1
        s, o = self.self_weight, 1.0 - self.self_weight

        def init(shape, dtype=None):
            base = ops.convert_to_tensor([[s, o], [o, s]], dtype=dtype or "float32")
            return ops.broadcast_to(ops.reshape(base, (2, 2, 1)), shape)

        self.alpha = self.add_weight(name="alpha", shape=(2, 2, channels), initializer=init,
                                     trainable=True)

    def call(self, inputs):
        a, b = inputs
        alpha = ops.cast(self.alpha, a.dtype)
        return [alpha[0, 0] * a + alpha[0, 1] * b, alpha[1, 0] * a + alpha[1, 1] * b]

    def compute_output_shape(self, input_shape):
        return [input_shape[0], input_shape[1]]

    def get_config(self):
        return {**super().get_config(), "per_channel": self.per_channel,
                "self_weight": self.self_weight}


@keras.saving.register_keras_serializable(package="age_gender")
class BackbonePreprocess(keras.layers.Layer):
    """A backbone's ImageNet preprocessing, as a layer inside the model (input: RGB 0-255).

    ``tf``: x/127.5 - 1; ``torch``: x/255 normalised by ImageNet mean and std; ``caffe``: BGR
    with the ImageNet mean subtracted; ``none``: unchanged (EfficientNet normalises inside).
    """

    MODES = ("tf", "torch", "caffe", "none")

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"preprocessing mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor([0.485, 0.456, 0.406], dtype=x.dtype)
            std = ops.convert_to_tensor([0.229, 0.224, 0.225], dtype=x.dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "caffe":
            mean = ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=x.dtype)
            return ops.flip(x, axis=-1) - mean
        return x

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="age_gender")
class AgeExpectation(keras.layers.Layer):
    """Expected age (years) under a softmax over the whole ages 0..``max_age``.

    Input: (B, max_age + 1) probabilities; output: (B, 1) float32, sum_j p_j * j. The age is read
    as a distribution and its expectation (DEX, Rothe et al. 2018; DLDL-v2, Gao et al. 2018)
    instead of one regression unit. With ``variance_weight`` > 0 the layer adds
    ``variance_weight * mean(Var_p)`` to the model's loss, the variance term of the mean-variance
    loss (Pan et al., CVPR 2018): it needs no target, so the data pipeline stays unchanged.
    """

    def __init__(self, max_age: int = 116, variance_weight: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if max_age < 1 or variance_weight < 0:
            raise ValueError(f"max_age must be >= 1 and variance_weight >= 0, got {max_age}, {variance_weight}")
        self.max_age, self.variance_weight = int(max_age), float(variance_weight)

    def call(self, probabilities):
        probabilities = ops.cast(probabilities, "float32")
        ages = ops.arange(self.max_age + 1, dtype="float32")
        mean = ops.sum(probabilities * ages, axis=-1, keepdims=True)
        if self.variance_weight:
            variance = ops.sum(probabilities * ops.square(ages - mean), axis=-1)
            self.add_loss(self.variance_weight * ops.mean(variance))
        return mean

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "max_age": self.max_age, "variance_weight": self.variance_weight}


@keras.saving.register_keras_serializable(package="age_gender")
class RandomAffine(keras.layers.Layer):
    """Random mirror, shift, zoom-in and rotation of each image, composed into ONE affine map and
    resampled once (``keras.ops.image.affine_transform``, bilinear, edges reflected).

    The same ranges as Keras's ``RandomFlip("horizontal")``, ``RandomTranslation(shift, shift)``,
    ``RandomZoom((-zoom, 0))`` and ``RandomRotation(rotation_degrees / 360)`` in a row, but each of
    those resamples the image again: three bilinear passes blur it three times and cost three
    transforms (README "Benchmarks": ``bench_transfer_levers``' ``single_resampling``). The
    study's Keras ``ImageDataGenerator`` also composed its transforms into one. Input and output:
    (B, H, W, C) images, any float or integer dtype (returned in the input's float dtype, 0-255
    kept); identity outside training. Per image: mirror with probability 0.5 (``flip``), shift
    U(-shift, shift) of each side, sampled area scaled by U(1 - zoom, 1) (zoom in), rotation
    U(-rotation_degrees, rotation_degrees) degrees, all about the image centre. Seeded
    (``keras.random.SeedGenerator``): the same seed gives the same draws.
    """

    def __init__(self, flip: bool = True, shift: float = 0.0, zoom: float = 0.0, rotation_degrees: float = 0.0,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not (0 <= shift < 1 and 0 <= zoom < 1 and 0 <= rotation_degrees <= 180):
            raise ValueError(f"RandomAffine needs 0 <= shift, zoom < 1 and 0 <= rotation_degrees <= 180, "
                             f"got {shift}, {zoom}, {rotation_degrees}")
        self.flip, self.shift, self.zoom = bool(flip), float(shift), float(zoom)
        self.rotation_degrees, self.seed = float(rotation_degrees), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _uniform(self, batch, low, high):
        return keras.random.uniform((batch,), minval=low, maxval=high, seed=self.seed_generator)

    def call(self, images, training=True):
        if not training:
            return images
        dtype = images.dtype if "float" in str(images.dtype) else "float32"
        x = ops.cast(images, "float32")
        batch = ops.shape(x)[0]
        height, width = ops.cast(ops.shape(x)[1], "float32"), ops.cast(ops.shape(x)[2], "float32")
        mirror = (ops.where(self._uniform(batch, 0.0, 1.0) < 0.5, -1.0, 1.0) if self.flip
                  else ops.ones((batch,)))
        angle = self._uniform(batch, -1.0, 1.0) * (self.rotation_degrees * 3.141592653589793 / 180.0)
        scale = self._uniform(batch, 1.0 - self.zoom, 1.0)
        shift_x = self._uniform(batch, -self.shift, self.shift) * width
        shift_y = self._uniform(batch, -self.shift, self.shift) * height
        # output pixel p -> input pixel q = c + s R(angle) F(mirror) (p - c) + t, c the centre
        cos, sin = ops.cos(angle), ops.sin(angle)
        a0, a1 = scale * mirror * cos, -scale * sin
        b0, b1 = scale * mirror * sin, scale * cos
        cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
        a2 = cx - a0 * cx - a1 * cy + shift_x
        b2 = cy - b0 * cx - b1 * cy + shift_y
        zeros = ops.zeros_like(a0)
        transform = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        out = ops.image.affine_transform(x, transform, interpolation="bilinear", fill_mode="reflect")
        return ops.cast(out, dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "flip": self.flip, "shift": self.shift, "zoom": self.zoom,
                "rotation_degrees": self.rotation_degrees, "seed": self.seed}
