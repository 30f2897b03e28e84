{
  "targets": [
    {
      "target_name": "convis",
      "sources": ["addon.c"],
      "include_dirs": ["../build"],
      "libraries": ["-lbpf"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-std=gnu11"],
      "defines": ["NAPI_DISABLE_CPP_EXCEPTIONS"]
    }
  ]
}
