r"""What else changes BN's effect (chapter "What else changes BN's effect"), by topic:
:mod:`~bnlib.experiments.factors.ntu_study` (Part 1),
:mod:`~bnlib.experiments.factors.batch_size` and
:mod:`~bnlib.experiments.factors.regularization` (Part 2), sharing
:mod:`~bnlib.experiments.factors.common`.

Part 1, which factors change BN's benefit (after the NTU MLDS 2017 course project, with
its flaws corrected: population statistics at test time, a mean loss, learning rates
chosen on held-out training data, test sets that have the stated class ratios):

- :func:`factor_study`: the NTU network on MNIST with and without BN as the activation,
  the optimizer or the batch size varies, each setting at its best learning rate;
- :func:`layer_diagnostics`: each layer's weight distribution and gradient norm over
  training, with and without BN;
- :func:`class_mismatch`: a 0-vs-1 classifier tested on sets with fewer and fewer ones,
  evaluated with population statistics and with the test batch's own statistics.

Part 2, when BN fails and what replaces it (:mod:`bnlib.norm_variants`):

- :func:`small_batches`: BN, LayerNorm, GroupNorm and no normalization for batch sizes
  2 to 128;
- :func:`batch_renorm`: batch renormalization against BN at batch size 4;
- :func:`ghost_batch_norm`: BN over small virtual batches inside a large batch;
- :func:`inference_pitfalls`: the same trained networks evaluated the right way and
  the wrong ways, and the fixes;
- :func:`dropout`: BN with and without dropout;
- :func:`bn_only`: training only BN's :math:`\gamma, \beta` in a frozen random network.

All accuracies are measured without changing the models (:func:`bnlib.engine.preserved_state`);
test data never reaches a model's training state, and learning rates are chosen on a
validation split held out of the training data, never on the test split.
"""

from bnlib.experiments.factors.batch_size import batch_renorm, ghost_batch_norm, small_batches
from bnlib.experiments.factors.common import CHAPTER, NORMS
from bnlib.experiments.factors.ntu_study import class_mismatch, factor_study, layer_diagnostics
from bnlib.experiments.factors.regularization import bn_only, dropout, inference_pitfalls

__all__ = [
    "CHAPTER",
    "NORMS",
    "batch_renorm",
    "bn_only",
    "class_mismatch",
    "dropout",
    "factor_study",
    "ghost_batch_norm",
    "inference_pitfalls",
    "layer_diagnostics",
    "small_batches",
]
