"""The command lines, one thin file per job; installed as the package `srgan_jobs` for the console scripts."""
