"""ROI heads: box (class + per-class deltas), mask and keypoint, on pyramid ROIAlign features.

Every head takes ROIs as a batch of padded lists, [B, N, 4] pixel (x1, y1, x2, y2) boxes, pools
them from P2..P5 with `PyramidRoiAlign` to [B, N, h, w, C], folds the ROI axis into the batch
(`MergeRoiAxis`: [B * N, h, w, C]), runs plain Keras layers and unfolds (`SplitRoiAxis`). The
weighted layers are top-level and carry matterport's names, so mask_rcnn_coco.h5 (whose
TimeDistributed wrappers hold the same inner weight shapes) loads by name:

    box head       mrcnn_class_conv1 (7x7 valid = conv-as-FC, FPN_CLASSIF_FC_LAYERS_SIZE),
                   mrcnn_class_bn1, relu, mrcnn_class_conv2 (1x1), mrcnn_class_bn2, relu,
                   mrcnn_class_logits (Dense NUM_CLASSES), mrcnn_bbox_fc (Dense NUM_CLASSES * 4);
                   LAYOUT "torchvision": no batch-norm (torchvision's TwoMLPHead fc6, fc7)
    mask head      4 x (mrcnn_mask_conv{i} 3x3 MASK_HEAD_CHANNELS, mrcnn_mask_bn{i}, relu),
                   mrcnn_mask_deconv (2x2 stride 2, relu) -> 28, mrcnn_mask (1x1, NUM_CLASSES)
    keypoint head  "deconv4" (published): KEYPOINT_HEAD_NUM_CONVS x (mrcnn_keypoint_conv{i} 3x3
                   KEYPOINT_HEAD_CONV_CHANNELS, relu), mrcnn_keypoint_deconv (4x4 stride 2
                   "same", NUM_KEYPOINTS) -> 28, bilinear x2 -> 56
                   "humanpose" (Mask_RCNN_Humanpose): 8 x (mrcnn_keypoint_mask_conv{i} 3x3 512,
                   mrcnn_keypoint_mask_bn{i}, relu), mrcnn_keypoint_mask_deconv (2x2 stride 2,
                   NUM_KEYPOINTS) -> 28, bilinear -> 56

`mrcnn_mask` and the keypoint head output logits (matterport's `mrcnn_mask` has the sigmoid
built in; the weights are the same, and the losses are computed stably from logits). The heads
are small builder objects: constructing one makes its layers once, calling it wires them into a
graph, so the training and the inference graphs share the very same weights.
"""
import keras
from keras import layers, ops

from mrcnn_kp.model.common_layers import batch_norm
from mrcnn_kp.model.torchvision_layout import torchvision_extent
from mrcnn_kp.ops import pyramid_roi_align as pyramid_ops

HUMANPOSE_NUM_CONVS = 8
HUMANPOSE_CONV_CHANNELS = 512


# ------------------------------------------------------------------------------------ layers
@keras.saving.register_keras_serializable(package="mrcnn_kp")
class PyramidRoiAlign(keras.layers.Layer):
    """Pool [B, N, 4] pixel boxes from [P2, P3, P4, P5] -> [B, N, size, size, C].

    Each box is read from the pyramid level picked by its size (DESIGN.md's level rule) with
    ops.pyramid_roi_align: true ROIAlign (sampling_ratio points per bin, aligned
    half-pixel shift) or matterport's crop_and_resize, per `mode`.
    """

    def __init__(self, pool_size, image_shape, sampling_ratio=2, aligned=True,
                 mode="roi_align", normalized_boxes=False, **kwargs):
        # Under mixed precision the features may be float16, but the boxes must stay float32
        # (pixel coordinates up to 1024 lose ~0.5 px in float16): no input autocasting.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        if mode not in pyramid_ops.MODES:
            raise ValueError(f"unknown ROI_ALIGN_MODE {mode!r}; choose one of "
                             f"{', '.join(pyramid_ops.MODES)}")
        self.mode = mode
        # matterport's normalised (y1, x1, y2, x2) boxes instead of pixels (crop_and_resize)
        self.normalized_boxes = bool(normalized_boxes)

    def call(self, boxes, feature_maps, image_meta=None):
        # Sampled in float32 (the ops mix float32 weights into the gathers); the heads' convs
        # cast back to their compute dtype. image_meta (LAYOUT "torchvision"): each image's
        # maps end where torchvision's do, at its size padded to 32, not at the canvas' edge.
        feature_maps = [ops.cast(f, "float32") for f in feature_maps]
        extents = None if image_meta is None else torchvision_extent(image_meta)  # [B, 2]
        return pyramid_ops.pyramid_roi_align_batched(
            feature_maps, ops.cast(boxes, "float32"), output_size=self.pool_size,
            image_size=self.image_shape[:2], sampling_ratio=self.sampling_ratio,
            aligned=self.aligned, mode=self.mode,
            normalized_boxes=self.normalized_boxes, extents=extents)  # [B, N, size, size, C]

    def compute_output_shape(self, boxes_shape, feature_maps_shape, image_meta_shape=None):
        channels = feature_maps_shape[0][-1]
        return tuple(boxes_shape[:2]) + (self.pool_size, self.pool_size, channels)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, image_shape=self.image_shape,
                      sampling_ratio=self.sampling_ratio, aligned=self.aligned, mode=self.mode,
                      normalized_boxes=self.normalized_boxes)
        return config


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class MergeRoiAxis(keras.layers.Layer):
    """[B, N, ...] -> [B * N, ...]: lets plain Keras layers run on every ROI at once."""

    def __init__(self, **kwargs):
        kwargs.setdefault("autocast", False)  # a reshape: keep the input dtype
        super().__init__(**kwargs)

    def call(self, inputs):
        shape = ops.shape(inputs)
        return ops.reshape(inputs, (-1,) + tuple(shape[2:]))

    def compute_output_shape(self, input_shape):
        b, n = input_shape[:2]
        merged = None if b is None or n is None else b * n
        return (merged,) + tuple(input_shape[2:])


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class SplitRoiAxis(keras.layers.Layer):
    """[[B * N, ...], rois [B, N, ...]] -> [B, N, ...]: unfolds what MergeRoiAxis folded.

    B and N are read from the ROI tensor, so N may be dynamic (see build_inference_model's
    dynamic_heads) as well as static.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("autocast", False)  # a reshape: keep the input dtype
        super().__init__(**kwargs)

    def call(self, inputs, rois):
        lead = ops.shape(rois)[:2]
        return ops.reshape(inputs, tuple(lead) + tuple(ops.shape(inputs)[1:]))

    def compute_output_shape(self, inputs_shape, rois_shape):
        return tuple(rois_shape[:2]) + tuple(inputs_shape[1:])


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class FirstRois(keras.layers.Layer):
    """[B, N, ...] -> [B, count, ...]: the first `count` ROI slots (e.g. the positive ones)."""

    def __init__(self, count, **kwargs):
        kwargs.setdefault("autocast", False)  # a slice: boxes stay float32
        super().__init__(**kwargs)
        self.count = int(count)

    def call(self, inputs):
        return inputs[:, :self.count]

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs.shape[0], self.count) + tuple(inputs.shape[2:]),
                                 inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config["count"] = self.count
        return config


def _pool(config, pool_size, name, rois, feature_maps, normalized=False, image_meta=None):
    """rois [B, N, 4] pooled from feature_maps by a PyramidRoiAlign of config's settings;
    image_meta: the images' extents on the canvas (see PyramidRoiAlign.call), or None."""
    layer = PyramidRoiAlign(pool_size, config.IMAGE_SHAPE, config.ROI_ALIGN_SAMPLING_RATIO,
                            config.ROI_ALIGN_ALIGNED, config.ROI_ALIGN_MODE,
                            normalized_boxes=normalized, name=name)
    if image_meta is None:
        return layer(rois, feature_maps)
    return layer(rois, feature_maps, image_meta=image_meta)


# ------------------------------------------------------------------------------------ box head
@keras.saving.register_keras_serializable(package="mrcnn_kp")
class WholeInputConv2D(layers.Conv2D):
    """A "valid" Conv2D whose kernel covers its whole input (matterport's conv-as-FC), run as one
    matrix product: [M, k, k, C] -> [M, k * k * C] @ kernel [k * k * C, F] -> [M, 1, 1, F].

    Same weights (kernel [k, k, C, F], bias [F]), names and result as Conv2D (only the
    summation order differs); the point is the gradient: on CPU, TensorFlow's
    Conv2DBackpropInput for a 7x7 kernel over 7x7 inputs is the costliest kernel of the box
    head in a training profile (36 s against 0.26 s for this layer at 512 ROIs, docs/RESULTS.md),
    where a matmul's gradient is two matmuls.
    """

    def __init__(self, filters, kernel_size, **kwargs):
        kwargs["padding"] = "valid"
        super().__init__(filters, kernel_size, **kwargs)

    def call(self, inputs):
        # inputs [M, k, k, C]
        kh, kw, channels, filters = self.kernel.shape
        if tuple(inputs.shape[1:3]) != (kh, kw):
            raise ValueError(f"{self.name}: input {tuple(inputs.shape[1:])} is not the kernel's "
                             f"{kh}x{kw} window")
        flat = ops.reshape(inputs, (-1, kh * kw * channels))  # [M, k*k*C]
        out = ops.matmul(flat, ops.reshape(self.kernel, (kh * kw * channels, filters)))
        if self.use_bias:
            out = out + self.bias
        if self.activation is not None:
            out = self.activation(out)
        return ops.reshape(out, (-1, 1, 1, filters))  # [M, 1, 1, F]


class BoxHead:
    """ROIs -> (class logits [B, N, NUM_CLASSES], class probs, deltas [B, N, NUM_CLASSES, 4])."""

    def __init__(self, config):
        self.config = config
        size = config.FPN_CLASSIF_FC_LAYERS_SIZE
        self.conv1 = WholeInputConv2D(size, config.POOL_SIZE, name="mrcnn_class_conv1")
        self.conv2 = WholeInputConv2D(size, 1, name="mrcnn_class_conv2")
        # torchvision's TwoMLPHead (fc6, fc7 + ReLU) is the same two convs without batch-norm
        two_mlp = getattr(config, "LAYOUT", "matterport") == "torchvision"
        self.bn1 = None if two_mlp else batch_norm(config, "mrcnn_class_bn1")
        self.bn2 = None if two_mlp else batch_norm(config, "mrcnn_class_bn2")
        self.class_logits = layers.Dense(config.NUM_CLASSES, name="mrcnn_class_logits")
        self.bbox_fc = layers.Dense(config.NUM_CLASSES * 4, name="mrcnn_bbox_fc")

    def __call__(self, rois, feature_maps, prefix="", normalized=False, image_meta=None):
        """rois [B, N, 4], feature_maps [P2..P5]; `prefix` names this call's weightless layers;
        normalized: the rois are matterport's normalised (y1, x1, y2, x2) (crop_and_resize);
        image_meta: where each image ends on the maps (LAYOUT "torchvision"), or None."""
        config = self.config
        x = _pool(config, config.POOL_SIZE, prefix + "roi_align_classifier", rois,
                  feature_maps, normalized, image_meta)  # [B, N, 7, 7, C]
        x = MergeRoiAxis(name=prefix + "mrcnn_class_merge")(x)  # [B*N, 7, 7, C]
        x = self.conv1(x)
        x = layers.Activation("relu", name=prefix + "mrcnn_class_relu1")(
            x if self.bn1 is None else self.bn1(x))
        x = self.conv2(x)
        x = layers.Activation("relu", name=prefix + "mrcnn_class_relu2")(
            x if self.bn2 is None else self.bn2(x))
        shared = layers.Reshape((config.FPN_CLASSIF_FC_LAYERS_SIZE,),
                                name=prefix + "pool_squeeze")(x)  # [B*N, FC]
        logits = SplitRoiAxis(name=prefix + "mrcnn_class_logits_split")(
            self.class_logits(shared), rois)  # [B, N, NUM_CLASSES]
        probs = layers.Softmax(name=prefix + "mrcnn_class", dtype="float32")(logits)
        deltas = layers.Reshape((config.NUM_CLASSES, 4), name=prefix + "mrcnn_bbox_reshape")(
            self.bbox_fc(shared))  # [B*N, NUM_CLASSES, 4]
        deltas = SplitRoiAxis(name=prefix + "mrcnn_bbox")(deltas, rois)  # [B, N, C, 4]
        return logits, probs, deltas


# ------------------------------------------------------------------------------------ mask head
class MaskHead:
    """ROIs -> mask logits [B, N, 28, 28, NUM_CLASSES] (sigmoid gives the probabilities)."""

    def __init__(self, config):
        self.config = config
        channels = config.MASK_HEAD_CHANNELS
        self.convs = [layers.Conv2D(channels, 3, padding="same", name=f"mrcnn_mask_conv{i}")
                      for i in range(1, 5)]
        self.bns = [batch_norm(config, f"mrcnn_mask_bn{i}") for i in range(1, 5)]
        self.deconv = layers.Conv2DTranspose(channels, 2, strides=2, activation="relu",
                                             name="mrcnn_mask_deconv")
        self.mask = layers.Conv2D(config.NUM_CLASSES, 1, name="mrcnn_mask")

    def __call__(self, rois, feature_maps, prefix="", normalized=False, image_meta=None):
        config = self.config
        x = _pool(config, config.MASK_POOL_SIZE, prefix + "roi_align_mask", rois, feature_maps,
                  normalized, image_meta)  # [B, N, 14, 14, C]
        x = MergeRoiAxis(name=prefix + "mrcnn_mask_merge")(x)  # [B*N, 14, 14, C]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns), start=1):
            x = layers.Activation("relu", name=f"{prefix}mrcnn_mask_relu{i}")(bn(conv(x)))
        x = self.mask(self.deconv(x))  # [B*N, 28, 28, NUM_CLASSES]
        return SplitRoiAxis(name=prefix + "mrcnn_mask_split")(x, rois)


# ------------------------------------------------------------------------------------ keypoints
class KeypointHead:
    """ROIs -> keypoint logits [B, N, 56, 56, NUM_KEYPOINTS], channels last."""

    def __init__(self, config):
        self.config = config
        self.variant = config.KEYPOINT_HEAD
        k = config.NUM_KEYPOINTS
        if self.variant == "deconv4":
            channels = config.KEYPOINT_HEAD_CONV_CHANNELS
            self.convs = [layers.Conv2D(channels, 3, padding="same", activation="relu",
                                        name=f"mrcnn_keypoint_conv{i}")
                          for i in range(1, config.KEYPOINT_HEAD_NUM_CONVS + 1)]
            self.bns = [None] * len(self.convs)
            self.deconv = layers.Conv2DTranspose(k, 4, strides=2, padding="same",
                                                 name="mrcnn_keypoint_deconv")
        elif self.variant == "humanpose":
            self.convs = [layers.Conv2D(HUMANPOSE_CONV_CHANNELS, 3, padding="same",
                                        name=f"mrcnn_keypoint_mask_conv{i}")
                          for i in range(1, HUMANPOSE_NUM_CONVS + 1)]
            self.bns = [batch_norm(config, f"mrcnn_keypoint_mask_bn{i}")
                        for i in range(1, HUMANPOSE_NUM_CONVS + 1)]
            self.deconv = layers.Conv2DTranspose(k, 2, strides=2,
                                                 name="mrcnn_keypoint_mask_deconv")
        else:
            raise ValueError(f"unknown KEYPOINT_HEAD {self.variant!r}")

    def __call__(self, rois, feature_maps, prefix="", normalized=False, image_meta=None):
        config = self.config
        x = _pool(config, config.KEYPOINT_POOL_SIZE, prefix + "roi_align_keypoint", rois,
                  feature_maps, normalized, image_meta)  # [B, N, 14, 14, C]
        x = MergeRoiAxis(name=prefix + "mrcnn_keypoint_merge")(x)  # [B*N, 14, 14, C]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns), start=1):
            x = conv(x)
            if bn is not None:
                x = layers.Activation("relu", name=f"{prefix}mrcnn_keypoint_relu{i}")(bn(x))
        x = self.deconv(x)  # [B*N, 28, 28, K]
        x = layers.UpSampling2D(2, interpolation="bilinear",
                                name=prefix + "mrcnn_keypoint_upsample")(x)  # [B*N, 56, 56, K]
        return SplitRoiAxis(name=prefix + "mrcnn_keypoint_split")(x, rois)


def build_heads(config):
    """The head builders of config: (box, mask or None, keypoint)."""
    mask = MaskHead(config) if config.USE_MASK_HEAD else None
    return BoxHead(config), mask, KeypointHead(config)
