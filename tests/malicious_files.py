"""Weight files that run code when opened carelessly, written without torch: each one creates
`marker` when unpickled (or, for the .keras file, when its Lambda layer is deserialized and
called). Tests assert that our readers refuse them and that the marker never appears.

    path = legacy_pth(tmp_path / "evil.pth", tmp_path / "MARKER", position=0)
"""
import os
import pickle
import zipfile

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
# where the payload sits in torch's legacy format: magic, protocol, sys_info, the state_dict
LEGACY_POSITIONS = ("magic", "protocol", "sys_info", "state_dict")


class ShellPayload:
    """Unpickling calls os.system("touch <marker>")."""

    def __init__(self, marker):
        self.marker = os.fspath(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class OpenPayload:
    """Unpickling calls open(marker, "w"): creates the file without a shell."""

    def __init__(self, marker):
        self.marker = os.fspath(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


PAYLOADS = (ShellPayload, OpenPayload)


def legacy_pth(path, marker, position="magic", payload=ShellPayload):
    """torch's legacy (non-zip) format with the payload in one of its five pickles."""
    evil = payload(marker)
    pickles = [LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                                    "type_sizes": {"short": 2, "int": 4, "long": 8}},
               {"weight": evil}, []]
    pickles[LEGACY_POSITIONS.index(position)] = evil
    with open(path, "wb") as f:
        for obj in pickles:
            pickle.dump(obj, f, protocol=2)
    return path


def zip_pth(path, marker, payload=ShellPayload):
    """torch's zip format (archive/data.pkl) whose state_dict holds the payload."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl",
                         pickle.dumps({"conv1.weight": payload(marker)}, protocol=2))
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/byteorder", "little")
    return path


def lambda_keras(path, marker, layer_name="fpn_c5p5"):
    """A .keras model whose Lambda layer creates `marker` whenever it is called: loading it with
    keras.saving.load_model(safe_mode=False) runs the code. The Dense layer carries a name of
    ours, so a by-name weight loader would find something to load."""
    import keras

    marker = os.fspath(marker)
    # a lambda (Keras stores its bytecode) with the marker path as a constant in its code
    touch = eval(f"lambda x: (open({marker!r}, 'w').close(), x)[1]")
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3, name=layer_name)(inputs)
    outputs = keras.layers.Lambda(touch, name="evil")(dense)
    keras.Model(inputs, outputs).save(os.fspath(path))
    if os.path.exists(marker):  # building the model called the Lambda once
        os.remove(marker)
    return path
