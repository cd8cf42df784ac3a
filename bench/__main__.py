"""python -m bench {suite,model,kernels,int8,profile,startup,memory,contention,soak,dask} [options]: run one of the benchmarks (options as for the scripts)."""

import sys

USAGE = "usage: python -m bench {suite,model,kernels,int8,profile,startup,memory,contention,soak,dask} [options]   (python -m bench model --help for options)"


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    which, rest = argv[0], argv[1:]
    if which == "suite":  # everything, as the README's figures were made
        import subprocess

        steps = [["kernels", "--threads", "1", "2"],
                 ["model", "--seq", "32", "128", "384", "--batch", "1", "8", "--threads", "1", "2",
                  "--repeats", "10", "--name", "model_grid"],
                 ["model", "--threads", "1", "2"], ["int8"], ["profile"], ["startup"], ["memory"], ["contention"]]
        for step in steps:
            print("== python -m bench", " ".join(step), flush=True)
            subprocess.run([sys.executable, "-m", "bench", *step, *rest], check=True)
        return
    if which == "model":
        from bench import bench_model as mod
    elif which == "kernels":
        from bench import bench_kernels as mod
    elif which == "int8":
        from bench import bench_int8 as mod
    elif which == "profile":
        from bench import bench_profile as mod
    elif which == "startup":
        from bench import bench_startup as mod
    elif which == "memory":
        from bench import bench_memory as mod
    elif which == "contention":
        from bench import bench_contention as mod
    elif which == "soak":
        from bench import bench_soak as mod
    elif which == "dask":
        from bench import bench_dask as mod
    else:
        sys.exit(f"unknown benchmark {which!r}\n{USAGE}")
    sys.argv = [mod.__file__, *rest]
    mod.main(rest)


if __name__ == "__main__":
    main()
