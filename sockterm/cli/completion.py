"""Completion scripts whose both ends are ours: bash and fish.

bash: candidates inserted verbatim and quoted.

click's bash script expands its answer unquoted (`for c in $response`,
`COMPREPLY+=($value)`): a namespace named `python3[812]` is glob-expanded by
the shell, and `read` without -r eats the backslashes of escaped names. This
script reads one candidate a line and quotes each for the command line.

fish: click changed its fish protocol in 8.4.0 (three lines an item, and a
script whose `string split \n` fish cannot parse) and back in 8.4.2 (one
`type,value` line): a committed script made by one click, answered by another
at the user's tab, completes nothing. Script and answer are both defined here,
so the committed files hold for any click the package accepts (zsh's protocol
has not changed across those releases).

Registered by main() only when the shell asks (_SOCKTERM_COMPLETE is set).
"""

from __future__ import annotations

from click.shell_completion import BashComplete, CompletionItem, FishComplete, add_completion_class

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


FISH_SOURCE = """\
function %(complete_func)s;
    set -l response (env %(complete_var)s=fish_complete COMP_WORDS=(commandline -cp) \
COMP_CWORD=(commandline -t) %(prog_name)s);

    for completion in $response;
        set -l metadata (string split -m 1 "," -- $completion);

        if test "$metadata[1]" = "dir";
            __fish_complete_directories $metadata[2];
        else if test "$metadata[1]" = "file";
            __fish_complete_path $metadata[2];
        else if test "$metadata[1]" = "plain";
            echo $metadata[2];
        end;
    end;
end;

complete --no-files --command %(prog_name)s --arguments "(%(complete_func)s)";
"""


class QuotedBashComplete(BashComplete):
    source_template = SOURCE


class LineFishComplete(FishComplete):
    """One `type,value[<TAB>help]` line an item; a newline in either would
    split the item, so it becomes a space (fish shows the tab's help)."""

    source_template = FISH_SOURCE

    def format_completion(self, item: CompletionItem) -> str:
        value = item.value.replace("\n", " ")
        if item.help:
            text = item.help.replace("\n", " ").replace("\t", " ")
            return f"{item.type},{value}\t{text}"
        return f"{item.type},{value}"


def register() -> None:
    add_completion_class(QuotedBashComplete, "bash")
    add_completion_class(LineFishComplete, "fish")
