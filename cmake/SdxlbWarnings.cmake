# Warnings and sanitizers for the project's own targets (never for third-party code).
function(sdxlb_target_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
  if(SDXLB_WERROR)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
  endif()
endfunction()

if(SDXLB_SANITIZE)
  add_compile_options(-fsanitize=${SDXLB_SANITIZE} -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${SDXLB_SANITIZE})
endif()
