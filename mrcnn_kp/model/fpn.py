"""Feature Pyramid Network: backbone C2..C5 -> P2..P6, matterport's layout and layer names.

    P5 = fpn_c5p5(C5)                                 1x1 conv to TOP_DOWN_PYRAMID_SIZE
    P4 = fpn_p5upsampled(P5) + fpn_c4p4(C4)           nearest x2, then add (fpn_p4add)
    P3 = fpn_p4upsampled(P4) + fpn_c3p3(C3)
    P2 = fpn_p3upsampled(P3) + fpn_c2p2(C2)
    P2..P5 = fpn_p2..fpn_p5(P2..P5)                   3x3 "same" convs
    P6 = fpn_p6(P5) = P5[:, ::2, ::2]                 max-pool of size 1, stride 2

The RPN uses P2..P6, the ROI heads P2..P5. Strides 4, 8, 16, 32, 64; every level has
TOP_DOWN_PYRAMID_SIZE channels. Layers are top-level and named like matterport's, so
mask_rcnn_coco.h5 loads by name and the trainer's `fpn_.*` regex selects them.
"""
from keras import layers


def build_fpn(features, config, valid=None):
    """[C2, C3, C4, C5] -> [P2, P3, P4, P5, P6], each [B, S / stride, S / stride, channels].

    valid: mrcnn_kp.model.torchvision_layout.valid_region_fn's masking (LAYOUT "torchvision"):
    applied to the inputs of the 3x3 convs and to P2..P6, so the RPN's 3x3 conv and the ROI pooling
    see torchvision's zeros beyond each image's padded size."""
    c2, c3, c4, c5 = features
    size = config.TOP_DOWN_PYRAMID_SIZE
    p5 = layers.Conv2D(size, 1, name="fpn_c5p5")(c5)  # [B, S/32, S/32, size]
    p4 = layers.Add(name="fpn_p4add")([
        layers.UpSampling2D(2, name="fpn_p5upsampled")(p5),
        layers.Conv2D(size, 1, name="fpn_c4p4")(c4)])  # [B, S/16, S/16, size]
    p3 = layers.Add(name="fpn_p3add")([
        layers.UpSampling2D(2, name="fpn_p4upsampled")(p4),
        layers.Conv2D(size, 1, name="fpn_c3p3")(c3)])  # [B, S/8, S/8, size]
    p2 = layers.Add(name="fpn_p2add")([
        layers.UpSampling2D(2, name="fpn_p3upsampled")(p3),
        layers.Conv2D(size, 1, name="fpn_c2p2")(c2)])  # [B, S/4, S/4, size]
    if valid is not None:
        p2, p3, p4, p5 = [valid(p, f"fpn_p{level}_valid_in")
                          for level, p in zip(range(2, 6), (p2, p3, p4, p5))]
    p2 = layers.Conv2D(size, 3, padding="same", name="fpn_p2")(p2)
    p3 = layers.Conv2D(size, 3, padding="same", name="fpn_p3")(p3)
    p4 = layers.Conv2D(size, 3, padding="same", name="fpn_p4")(p4)
    p5 = layers.Conv2D(size, 3, padding="same", name="fpn_p5")(p5)
    p6 = layers.MaxPooling2D(pool_size=1, strides=2, name="fpn_p6")(p5)  # [B, S/64, S/64, size]
    pyramid = [p2, p3, p4, p5, p6]
    if valid is not None:  # P6 of a 32-multiple is ceil(/ 64): divisor 64 at that level
        pyramid = [valid(p, f"fpn_p{level}_valid", 64 if level == 6 else 32)
                   for level, p in zip(range(2, 7), pyramid)]
    return pyramid
