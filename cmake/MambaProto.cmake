# mamba_add_proto_library(<target> PROTOS <a.proto>... [ROOT <dir>] [IMPORT_DIRS <dir>...]
#                         [PYTHON] [NO_PYTHON <a.proto>...])
#
# Generates C++ messages and gRPC stubs for PROTOS (paths relative to ROOT, default
# ${CMAKE_SOURCE_DIR}/protos) into ${CMAKE_BINARY_DIR}/protos-gen and builds them as the
# static library <target> (links protobuf and grpc++; the generated headers are included
# as "mamba/common/v1/common.pb.h"). IMPORT_DIRS are further `-I` roots for imports
# (another library's ROOT); link that library too.
# PYTHON also generates Python stubs (<name>_pb2.py, <name>_pb2_grpc.py) into
# ${CMAKE_BINARY_DIR}/clients/python/ at build time with `python3 -m grpc_tools.protoc`
# (Debian: python3-grpc-tools); skipped with a message when grpc_tools is not importable.
# NO_PYTHON lists protos to leave out of the Python stubs.
include_guard(GLOBAL)

set(MAMBA_PROTO_GEN_DIR ${CMAKE_BINARY_DIR}/protos-gen)
set(MAMBA_PYTHON_STUB_DIR ${CMAKE_BINARY_DIR}/clients/python)

if(NOT DEFINED MAMBA_PYTHON_GRPC_TOOLS)
  find_program(MAMBA_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
  if(NOT MAMBA_PYTHON3)
    find_program(MAMBA_PYTHON3 NAMES python3)
  endif()
  set(_ok OFF)
  if(MAMBA_PYTHON3)
    execute_process(COMMAND ${MAMBA_PYTHON3} -c "import grpc_tools.protoc"
                    RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_QUIET)
    if(_rc EQUAL 0)
      set(_ok ON)
    endif()
  endif()
  set(MAMBA_PYTHON_GRPC_TOOLS ${_ok} CACHE BOOL "python3 -m grpc_tools.protoc works (Python stubs)")
  if(_ok)
    message(STATUS "Mamba Suite: Python gRPC stubs with ${MAMBA_PYTHON3} -m grpc_tools.protoc")
  else()
    message(STATUS "Mamba Suite: Python gRPC stubs skipped (python3 -m grpc_tools.protoc not "
                   "importable; Debian package python3-grpc-tools)")
  endif()
endif()

function(mamba_add_proto_library target)
  cmake_parse_arguments(ARG "PYTHON" "ROOT" "PROTOS;IMPORT_DIRS;NO_PYTHON" ${ARGN})
  if(NOT ARG_ROOT)
    set(ARG_ROOT ${CMAKE_SOURCE_DIR}/protos)
  endif()
  set(include_flags -I${ARG_ROOT})
  foreach(dir ${ARG_IMPORT_DIRS})
    list(APPEND include_flags -I${dir})
  endforeach()
  set(all_protos)
  foreach(proto ${ARG_PROTOS})
    list(APPEND all_protos ${ARG_ROOT}/${proto})
  endforeach()

  set(cc_outputs)
  set(py_outputs)
  foreach(proto ${ARG_PROTOS})
    string(REGEX REPLACE "\\.proto$" "" stem ${proto})
    set(outs ${MAMBA_PROTO_GEN_DIR}/${stem}.pb.cc ${MAMBA_PROTO_GEN_DIR}/${stem}.pb.h
             ${MAMBA_PROTO_GEN_DIR}/${stem}.grpc.pb.cc ${MAMBA_PROTO_GEN_DIR}/${stem}.grpc.pb.h)
    add_custom_command(
      OUTPUT ${outs}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${MAMBA_PROTO_GEN_DIR}
      COMMAND protobuf::protoc ${include_flags}
              --cpp_out=${MAMBA_PROTO_GEN_DIR} --grpc_out=${MAMBA_PROTO_GEN_DIR}
              --plugin=protoc-gen-grpc=$<TARGET_FILE:gRPC::grpc_cpp_plugin> ${proto}
      WORKING_DIRECTORY ${ARG_ROOT}
      DEPENDS ${all_protos} protobuf::protoc gRPC::grpc_cpp_plugin
      COMMENT "protoc (C++) ${proto}"
      VERBATIM)
    list(APPEND cc_outputs ${MAMBA_PROTO_GEN_DIR}/${stem}.pb.cc ${MAMBA_PROTO_GEN_DIR}/${stem}.grpc.pb.cc)
    if(ARG_PYTHON AND MAMBA_PYTHON_GRPC_TOOLS AND NOT proto IN_LIST ARG_NO_PYTHON)
      set(py ${MAMBA_PYTHON_STUB_DIR}/${stem}_pb2.py ${MAMBA_PYTHON_STUB_DIR}/${stem}_pb2_grpc.py)
      add_custom_command(
        OUTPUT ${py}
        COMMAND ${CMAKE_COMMAND} -E make_directory ${MAMBA_PYTHON_STUB_DIR}
        COMMAND ${MAMBA_PYTHON3} -m grpc_tools.protoc ${include_flags}
                --python_out=${MAMBA_PYTHON_STUB_DIR} --grpc_python_out=${MAMBA_PYTHON_STUB_DIR} ${proto}
        WORKING_DIRECTORY ${ARG_ROOT}
        DEPENDS ${all_protos}
        COMMENT "grpc_tools.protoc (Python) ${proto}"
        VERBATIM)
      list(APPEND py_outputs ${py})
    endif()
  endforeach()

  add_library(${target} STATIC ${cc_outputs})
  target_include_directories(${target} PUBLIC ${MAMBA_PROTO_GEN_DIR})
  target_link_libraries(${target} PUBLIC protobuf::libprotobuf gRPC::grpc++)
  if(py_outputs)
    add_custom_target(${target}_python ALL DEPENDS ${py_outputs})
  endif()
endfunction()
