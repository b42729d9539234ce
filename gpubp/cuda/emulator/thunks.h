// thunks.h: helpers for the wrapper translation unit that gpubp.cuda.emulator
// generates around a kernel source.  Included after cuda_shim.h and *before*
// the kernel source and its -D macros, so that no user macro can rewrite it.
//
// For every extern "C" __global__ kernel the wrapper exports
//   gpubp_thunk_NAME(void** args)       calls NAME(*(P0*)args[0], *(P1*)args[1], ...)
//   gpubp_describe_NAME(desc, capacity) the parameter types as the compiler sees them
// so that Python checks arguments against the real types, not against its own
// reading of the source text (typedefs, macros).
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

namespace gpubp {

// One parameter: a value, or a pointer to elements of `category`:
// 'f' floating, 'i' signed integer, 'u' unsigned integer, 'b' bool, 'v' void,
// 'F'/'D'/'I' float/double/int vector structs, 'o' anything else (unsupported).
// `size` is sizeof the value or of one pointed-to element (0 for void).
struct param_desc {
    int pointer;
    int const_pointee;
    int category;
    int size;
};

template <typename T>
struct category_of {
    static constexpr int value = std::is_same<T, bool>::value         ? 'b'
                                 : std::is_floating_point<T>::value  ? 'f'
                                 : std::is_integral<T>::value        ? (std::is_signed<T>::value ? 'i' : 'u')
                                 : std::is_void<T>::value            ? 'v'
                                                                     : 'o';
};
template <> struct category_of<float2> { static constexpr int value = 'F'; };
template <> struct category_of<float3> { static constexpr int value = 'F'; };
template <> struct category_of<float4> { static constexpr int value = 'F'; };
template <> struct category_of<double2> { static constexpr int value = 'D'; };
template <> struct category_of<int2> { static constexpr int value = 'I'; };
template <> struct category_of<int3> { static constexpr int value = 'I'; };
template <> struct category_of<int4> { static constexpr int value = 'I'; };

template <typename T>
constexpr int size_of() {
    if constexpr (std::is_void<T>::value) return 0;
    else return static_cast<int>(sizeof(T));
}

template <typename P>
constexpr param_desc describe_one() {
    using U = std::remove_cv_t<P>;
    if constexpr (std::is_pointer<U>::value) {
        using E = std::remove_pointer_t<U>;
        using B = std::remove_cv_t<E>;
        return param_desc{1, std::is_const<E>::value ? 1 : 0, category_of<B>::value, size_of<B>()};
    } else {
        return param_desc{0, 0, category_of<U>::value, size_of<U>()};
    }
}

template <typename... P>
int describe(void (*)(P...), param_desc* out, int capacity) {
    const param_desc d[] = {describe_one<P>()..., param_desc{}};
    const int n = static_cast<int>(sizeof...(P));
    for (int i = 0; i < n && i < capacity; ++i) out[i] = d[i];
    return n;
}

template <typename... P, std::size_t... I>
void invoke_impl(void (*kernel)(P...), void** args, std::index_sequence<I...>) {
    (void)args;  // unused when the kernel has no parameters
    kernel(*static_cast<std::remove_cv_t<P>*>(args[I])...);
}

template <typename... P>
void invoke(void (*kernel)(P...), void** args) {
    invoke_impl(kernel, args, std::index_sequence_for<P...>{});
}

}  // namespace gpubp
