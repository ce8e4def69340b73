from nonstop.workers.worker import main

main()
