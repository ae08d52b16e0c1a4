{
  "targets": [
    {
      "target_name": "original_dst",
      "sources": ["proxy/capture/original-dst.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
