"""The papers' printed figures for each network, to print beside ours.

params / mults: the paper's counts; err: test error %; speedup / compression: against the
paper's teacher; cpu_s_per_100: the adversarial-KD paper's CPU seconds per batch of 100."""

FIGURES = {
    # FitNets (Romero et al. 2015): Table 4 (MNIST) and Table 5 (CIFAR-10)
    "mnist-teacher": {"params": 361e3, "err": 0.55, "source": "FitNets Table 4"},
    "mnist-fitnet": {"params": 30e3, "err": 0.51, "source": "FitNets Table 4"},
    "cifar-teacher": {"params": 9e6, "mults": 725e6, "err": 100 - 90.18, "source": "FitNets Table 5"},
    "fitnet-1": {"params": 250e3, "mults": 30e6, "err": 100 - 89.01, "speedup": 13.36, "compression": 36,
                 "source": "FitNets Table 5"},
    "fitnet-2": {"params": 862e3, "mults": 108e6, "err": 100 - 91.06, "speedup": 4.64, "compression": 10.44,
                 "source": "FitNets Table 5"},
    "fitnet-3": {"params": 1.6e6, "mults": 392e6, "err": 100 - 91.10, "speedup": 1.37, "compression": 5.62,
                 "source": "FitNets Table 5"},
    "fitnet-4": {"params": 2.5e6, "mults": 382e6, "err": 100 - 91.61, "speedup": 1.52, "compression": 3.60,
                 "source": "FitNets Table 5"},
    "svhn-teacher": {"params": 4.9e6, "err": 2.38, "source": "FitNets SVHN"},
    # Xu, Hsu, Huang 2017, Table 5 (CIFAR-100, 100 classes)
    "wrn-10-2": {"params": 0.32e6, "cpu_s_per_100": 0.14, "source": "adversarial KD Table 5"},
    "wrn-10-4": {"params": 1.22e6, "cpu_s_per_100": 0.32, "source": "adversarial KD Table 5"},
    "wrn-10-6": {"params": 2.72e6, "cpu_s_per_100": 0.60, "source": "adversarial KD Table 5"},
    "wrn-10-8": {"params": 4.81e6, "cpu_s_per_100": 0.82, "source": "adversarial KD Table 5"},
    "wrn-10-10": {"params": 7.49e6, "cpu_s_per_100": 1.17, "source": "adversarial KD Table 5"},
    "wrn-16-4": {"params": 2.77e6, "cpu_s_per_100": 0.71, "source": "adversarial KD Table 5"},
    "wrn-22-4": {"params": 4.32e6, "cpu_s_per_100": 1.07, "source": "adversarial KD Table 5"},
    "wrn-28-4": {"params": 5.87e6, "cpu_s_per_100": 1.44, "source": "adversarial KD Table 5"},
    "wrn-34-4": {"params": 7.42e6, "cpu_s_per_100": 1.73, "source": "adversarial KD Table 5"},
    "wrn-40-10": {"params": 55.9e6, "cpu_s_per_100": 8.73, "source": "adversarial KD Table 5"},
}

# the teacher each family is compared with
TEACHER_OF = {"mnist-": "mnist-teacher", "fitnet-": "cifar-teacher", "depth-": "cifar-teacher",
              "cifar-": "cifar-teacher", "svhn-": "svhn-teacher", "wrn-": "wrn-40-10"}


def teacher_for(name: str) -> str | None:
    for prefix, teacher in TEACHER_OF.items():
        if name.startswith(prefix):
            return teacher
    return None
