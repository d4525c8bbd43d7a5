"""A numpy transcription of torchvision's CPU ROIAlign (roi_align_kernel.cpp), one roi, one bin,
one sample at a time, and the boxes the ROIAlign tests pool (a plain module: conftest is not
importable by name when several test folders have one)."""
import numpy as np


def bilinear(fmap, y, x):
    """torchvision's bilinear_interpolate on one [H, W, C] map."""
    height, width = fmap.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(fmap.shape[2])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * fmap[y_low, x_low] + hy * lx * fmap[y_low, x_high]
            + ly * hx * fmap[y_high, x_low] + ly * lx * fmap[y_high, x_high])


def reference_roi_align(features, boxes, box_indices, output_size, spatial_scale,
                        sampling_ratio, aligned):
    out_h, out_w = output_size
    out = np.zeros((len(boxes), out_h, out_w, features.shape[-1]))
    offset = 0.5 if aligned else 0.0
    for n, (box, b) in enumerate(zip(boxes.astype(np.float64), box_indices)):
        x1, y1 = box[0] * spatial_scale - offset, box[1] * spatial_scale - offset
        x2, y2 = box[2] * spatial_scale - offset, box[3] * spatial_scale - offset
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        for ph in range(out_h):
            for pw in range(out_w):
                acc = 0.0
                for iy in range(sampling_ratio):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / sampling_ratio
                    for ix in range(sampling_ratio):
                        x = x1 + pw * bin_w + (ix + 0.5) * bin_w / sampling_ratio
                        acc = acc + bilinear(features[b], y, x)
                out[n, ph, pw] = acc / (sampling_ratio * sampling_ratio)
    return out


def random_boxes(rng, n, size):
    xy = rng.uniform(-0.2 * size, size, (n, 2))
    wh = rng.uniform(0.5, 0.8 * size, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


EDGE_BOXES = np.array([
    [8, 8, 8, 8],          # zero area
    [10, 12, 10.5, 30],    # thinner than one feature pixel
    [3, 3, 3.5, 3.5],      # smaller than one feature cell
    [-12, -6, 20, 18],     # crosses the top-left border
    [40, 20, 70, 36],      # crosses the bottom-right border (image 64 x 48 at scale 0.5)
    [-30, -30, -10, -10],  # entirely outside
    [20, 20, 10, 10],      # inverted
], np.float32)
