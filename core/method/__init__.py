"""The method's rules as pure, torch-free functions (docs/method.md): steps-to-go bins and
d(o, g), progress rewards and returns, the one success-detector rule, statistics, seed
ranges, and the run configurations and job parameters every layer shares. The UI and
storage may import this package and nothing else of ``core``."""
