"""bash completion that inserts candidates verbatim and quoted.

click's bash script expands its answer unquoted (`for c in $response`,
`COMPREPLY+=($value)`): a namespace named `python3[812]` is glob-expanded by
the shell, and `read` without -r eats the backslashes of escaped names. This
script reads one candidate a line and quotes each for the command line.
Registered by main() only when the shell asks (_SOCKTERM_COMPLETE is set).
"""

from __future__ import annotations

from click.shell_completion import BashComplete, add_completion_class

SOURCE = r"""%(complete_func)s() {
    local IFS=$'\n'
    local response completion type value
    local -a lines

    response=$(env COMP_WORDS="${COMP_WORDS[*]}" COMP_CWORD=$COMP_CWORD %(complete_var)s=bash_complete $1)

    # one candidate a line, verbatim (no word splitting, no globbing of
    # comm[pid]), each quoted for the command line
    mapfile -t lines <<< "$response"
    for completion in "${lines[@]}"; do
        IFS=',' read -r type value <<< "$completion"

        if [[ $type == 'dir' ]]; then
            COMPREPLY=()
            compopt -o dirnames
        elif [[ $type == 'file' ]]; then
            COMPREPLY=()
            compopt -o default
        elif [[ $type == 'plain' ]]; then
            COMPREPLY+=("$(printf '%%q' "$value")")
        fi
    done

    return 0
}

%(complete_func)s_setup() {
    complete -o nosort -F %(complete_func)s %(prog_name)s
}

%(complete_func)s_setup;
"""


class QuotedBashComplete(BashComplete):
    source_template = SOURCE


def register() -> None:
    add_completion_class(QuotedBashComplete, "bash")
