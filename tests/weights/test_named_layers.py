"""mrcnn_kp.weights.named_layers: a model's named layers with weights, as loading matches them."""
import h5py

from standin_weights import standin

from mrcnn_kp.weights.named_layers import model_units


def test_model_units_match_the_paths_keras_writes(tmp_path):
    """model_units mirrors Keras' own save walk; this catches a Keras upgrade that changes it."""
    model = standin(training=True)
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    written = []
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: written.append(name) if isinstance(obj, h5py.Dataset)
                     else None)
    ours = [f"{u.keras_path}/{sv.rel_path + '/' if sv.rel_path else ''}vars/{k}"
            for u in model_units(model) for sv in u.saveables for k in sv.keys]
    assert sorted(ours) == sorted(written)
    assert len(written) == 28
