"""Labels outside the known classes: gpumlp.data.encode_labels refuses them with a ValueError
that names them (between two classes, above, below, as strings or as floats), never mapping
one to a neighbouring class's index."""
import numpy as np
import pytest

from gpumlp.data import encode_labels


def _refused(y, classes, unknown):
    """encode_labels refuses y, naming exactly the unknown labels (sorted, each once) and no known one."""
    with pytest.raises(ValueError, match="not among") as e:
        encode_labels(y, classes)
    assert str(e.value).startswith(f"labels {sorted(unknown)!r} are not among the model's classes {classes!r}")


@pytest.mark.parametrize("y, unknown", [([1, 2, 3], [2]),            # between the two classes
                                        ([2], [2]),
                                        ([0, 1], [0]),               # below
                                        ([-7], [-7]),
                                        ([3, 4], [4]),               # above
                                        ([10**12], [10**12])])
def test_integer_labels_outside_the_classes_are_refused_and_named(y, unknown):
    _refused(y, [1, 3], unknown)


def test_a_label_between_classes_is_not_mapped_to_either_neighbour():
    classes = np.array([1, 3, 5])
    idx, _ = encode_labels([5, 1, 3, 3], classes)
    assert idx.tolist() == [2, 0, 1, 1] and idx.dtype == np.int64
    for between in (2, 4):
        with pytest.raises(ValueError, match=rf"labels \[{between}\]"):
            encode_labels([1, between, 5], classes)


@pytest.mark.parametrize("y, unknown", [(["ant", "bee", "cow"], ["bee"]),    # between "ant" and "cow"
                                        (["aardvark"], ["aardvark"]),        # below
                                        (["zebra", "ant"], ["zebra"]),       # above
                                        ([""], [""]),
                                        (["Ant"], ["Ant"]),                   # case matters
                                        (["an"], ["an"]),                     # a prefix of a class
                                        (["ant "], ["ant "])])
def test_string_labels_outside_the_classes_are_refused_and_named(y, unknown):
    _refused(y, ["ant", "cow"], unknown)


def test_string_classes_map_their_own_labels():
    idx, classes = encode_labels(np.array(["cow", "ant", "cow"]), np.array(["ant", "cow"]))
    assert idx.tolist() == [1, 0, 1] and classes.tolist() == ["ant", "cow"]


def test_whole_float_labels_between_classes_are_refused():
    with pytest.raises(ValueError, match=r"labels \[2\]"):
        encode_labels(np.array([1.0, 2.0, 3.0]), np.array([1, 3]))
    idx, _ = encode_labels(np.array([3.0, 1.0]), np.array([1, 3]))
    assert idx.tolist() == [1, 0]


def test_non_integer_floats_are_refused_not_rounded_onto_a_class():
    for bad in (1.5, 2.9999, np.nan, np.inf):
        with pytest.raises(ValueError, match="non-integer floats"):
            encode_labels(np.array([1.0, bad]), np.array([1, 2, 3]))


def test_integer_labels_do_not_match_string_classes():
    with pytest.raises(ValueError, match="not among"):
        encode_labels([1], ["1", "3"])
    with pytest.raises(ValueError, match="not among"):
        encode_labels(["1"], [1, 3])


def test_the_error_lists_each_unknown_label_once():
    with pytest.raises(ValueError, match=r"labels \[0, 2, 9\] are not among the model's classes \[1, 3\]"):
        encode_labels([2, 2, 9, 0, 1, 2], [1, 3])


def test_empty_classes_are_refused_with_a_value_error():
    with pytest.raises(ValueError, match="classes"):
        encode_labels([1], np.array([], dtype=np.int64))


def test_unsorted_classes_are_refused_as_unsorted():
    with pytest.raises(ValueError, match="sorted"):
        encode_labels([3, 1], [3, 1])


def test_labels_must_be_one_dimensional():
    with pytest.raises(ValueError, match="1-D|one label per sample"):
        encode_labels([[1, 3]], [1, 3])
