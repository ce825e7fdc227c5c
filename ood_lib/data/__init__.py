"""The datasets of the study: where they come from, how they are checked, how much of each is here.

Nalisnick et al. (2019) train flows and VAEs on CIFAR-10 and Fashion-MNIST and evaluate them on
SVHN, MNIST and notMNIST. Every split is handed to the rest of the book as one
:class:`~ood_lib.data.store.Split`: ``x`` uint8 images of shape ``(N, H, W, C)`` (channels last,
raw levels 0..255), ``y`` int64 labels 0..9 and ``index`` int64, the position of each image in its
official split (-1 unknown).

Two modes meet in one loader
----------------------------
*Offline* (the default where a ``manifest.json`` is found): a data root holds ``.npz`` copies
named ``<dataset>_<split>.npz`` (``notmnist_small.npz`` for both notMNIST splits) and a
``manifest.json`` giving each file's sha256. The network is never touched. A file is checked
against its sha256 once per process (the check is cached by path, mtime and size); a split
without a file raises :class:`~ood_lib.data.files.MissingDataError`. Offline copies may be partial
(CIFAR-10 test: the first 1,000 of 10,000 images; SVHN test: 7,136 of 26,032; MNIST train: 10,000
of 60,000); ``Split.coverage`` says how much of the official split is present, and the book reports
it.

*Online* (``OOD_DATA=online``, or no manifest at the root): the complete sets are downloaded with
torchvision (CIFAR10, SVHN, MNIST, FashionMNIST) and the original ``notMNIST_small.tar.gz``,
converted by :func:`~ood_lib.data.download.from_torchvision_arrays` /
:func:`~ood_lib.data.download.from_notmnist_folder` into the same ``.npz`` layout, and
registered in a ``manifest.json`` with their sha256 (``"origin": "online"``), so that both
modes then read files through the same checked path.

The data root is chosen by :func:`~ood_lib.data.files.resolve_data_root`: an explicit argument, else
``$OOD_DATA_ROOT``, else ``<project>/../shared/data`` when it holds a ``manifest.json`` (not in
online mode), else the download cache ``$OOD_CACHE`` (default ``<project>/data_cache``). An
explicit root (the argument or ``$OOD_DATA_ROOT``) that does not exist is an error naming it
(:func:`~ood_lib.data.files.checked_data_root`), never a download into it: only the download cache
is created.

The held-out split
------------------
Official CIFAR-10 training images 45,000-49,999 and Fashion-MNIST training images 55,000-59,999
form the ``val`` split (loadable by name: ``load_named("cifar10_val")``); ``train`` is the rest,
and no model trains on ``val``. Whatever is *fitted* on in-distribution data is fitted on
``val`` and checked by :func:`~ood_lib.data.store.check_fit_split`, which refuses a test split,
training images and a ``val`` split that the given model trained on. notMNIST's ``val`` is the even
positions of its test split; a fitted method is scored on the odd positions
(:func:`~ood_lib.data.store.fit_evaluation_split`).

notMNIST's fixed split
----------------------
notMNIST_small (letters A-J rendered in many fonts, 28x28 grey) has no official train/test
split. We define one by file name, so that it is the same online and offline and does not
depend on file order: an image with file name ``s`` (``"<letter>/<file>.png"``, e.g.
``"A/MDEtMDEtMDAudHRm.png"``) is a *test* image iff

    sha256(utf8(s))[0] < 51,

i.e. the first byte of the hash falls in the lowest 51/256 = 19.9% of its range. Of the 18,724
readable images, 3,762 are test and 14,962 train. ``index`` is the position of the file name in
the sorted list of all readable names. notMNIST_small holds ~490 duplicate images under
different names, so a few identical images may sit on both sides of the split.

Modules, from the bottom up:

- ``files``     the data root and its files: names, manifest, sha256 checks, ``.npz`` layout,
                notMNIST's split rule, the errors of reading them
- ``download``  online mode: fetch the complete sets and write them in the offline layout
- ``store``     :class:`~ood_lib.data.store.Split` and ``load``: the splits the book uses, and
                which images a fit may see
- ``stats``     coverage tables, per-pixel moments and per-channel statistics of a split
"""
