from rankrm.sweep.runner import main

main()
